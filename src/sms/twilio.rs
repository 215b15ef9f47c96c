use std::time::Duration;

use super::{SendFuture, SmsMessage, SmsProvider};

/// Twilio's Messages API: a form POST with the account's SID and auth token
/// as Basic credentials; 2xx is accepted for delivery.
pub struct TwilioProvider {
    client: reqwest::Client,
    url: String,
    account_sid: String,
    auth_token: String,
    from: String,
}

impl TwilioProvider {
    pub fn new(
        api_base: &str,
        account_sid: &str,
        auth_token: &str,
        from: &str,
        timeout: Duration,
    ) -> Result<TwilioProvider, String> {
        let client = super::http_client(timeout)?;
        Ok(TwilioProvider {
            client,
            url: format!(
                "{}/2010-04-01/Accounts/{account_sid}/Messages.json",
                api_base.trim_end_matches('/')
            ),
            account_sid: account_sid.to_string(),
            auth_token: auth_token.to_string(),
            from: from.to_string(),
        })
    }
}

impl SmsProvider for TwilioProvider {
    fn name(&self) -> &'static str {
        "twilio"
    }

    fn send<'a>(&'a self, message: &'a SmsMessage) -> SendFuture<'a> {
        Box::pin(async move {
            // A Messaging Service SID (MG…) goes in its own field instead of From.
            let sender = if self.from.starts_with("MG") {
                "MessagingServiceSid"
            } else {
                "From"
            };
            let request = self
                .client
                .post(&self.url)
                .basic_auth(&self.account_sid, Some(&self.auth_token))
                .form(&[
                    ("To", message.to.as_str()),
                    (sender, self.from.as_str()),
                    ("Body", message.body.as_str()),
                ]);
            super::deliver(request).await
        })
    }
}
