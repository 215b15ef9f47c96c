use std::time::Duration;

use super::{SendFuture, SmsMessage, SmsProvider};

/// POSTs `{"to", "body", "code"}` as JSON; any 2xx is delivered, anything else
/// (or no answer within the timeout) is a failure.
pub struct WebhookProvider {
    client: reqwest::Client,
    url: url::Url,
}

impl WebhookProvider {
    pub fn new(url: url::Url, timeout: Duration) -> Result<WebhookProvider, String> {
        let client = super::http_client(timeout)?;
        Ok(WebhookProvider { client, url })
    }
}

impl SmsProvider for WebhookProvider {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn send<'a>(&'a self, message: &'a SmsMessage) -> SendFuture<'a> {
        Box::pin(super::deliver(
            self.client.post(self.url.clone()).json(message),
        ))
    }
}
