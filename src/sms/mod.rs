//! SMS delivery behind one trait: `console` for development, `webhook` to hand
//! the message to any HTTP service, `twilio` for Twilio's Messages API. The code is in the message, so no
//! provider logs the message or the code.

mod console;
mod twilio;
mod webhook;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::config::{Config, SmsProviderKind};

pub use console::ConsoleProvider;
pub use twilio::TwilioProvider;
pub use webhook::WebhookProvider;

#[derive(Debug, Clone, serde::Serialize)]
pub struct SmsMessage {
    /// E.164.
    pub to: String,
    pub body: String,
    pub code: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SmsError {
    #[error("SMS provider unreachable: {0}")]
    Unreachable(String),
    #[error("SMS provider refused the message with status {0}")]
    Refused(u16),
}

pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SmsError>> + Send + 'a>>;

pub trait SmsProvider: Send + Sync {
    fn name(&self) -> &'static str;
    fn send<'a>(&'a self, message: &'a SmsMessage) -> SendFuture<'a>;
}

/// The HTTP client of an SMS provider. Idle connections are dropped after 4
/// seconds, before servers with the common 5-second keep-alive close them:
/// a code sent on a connection the provider was closing at that moment fails
/// (seen under load against such a server), and a POST that may have been
/// delivered is not retried, lest the phone get two codes.
fn http_client(timeout: std::time::Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_idle_timeout(std::time::Duration::from_secs(4))
        .build()
        .map_err(|e| format!("cannot build the SMS provider's HTTP client: {e}"))
}

/// Sends a provider's HTTP request: any 2xx is delivered. Errors leave the
/// URL out, since it may carry credentials.
async fn deliver(request: reqwest::RequestBuilder) -> Result<(), SmsError> {
    let response = request
        .send()
        .await
        .map_err(|e| SmsError::Unreachable(e.without_url().to_string()))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(SmsError::Refused(status.as_u16()))
    }
}

/// The message text from the configured template.
pub fn render(template: &str, host: &str, code: &str) -> String {
    template.replace("{host}", host).replace("{code}", code)
}

pub fn from_config(config: &Config) -> Result<Arc<dyn SmsProvider>, String> {
    match config.sms.provider {
        SmsProviderKind::Console => Ok(Arc::new(ConsoleProvider)),
        SmsProviderKind::Webhook => {
            let url = config
                .sms
                .webhook_url
                .clone()
                .ok_or("PHONEKEY_SMS_WEBHOOK_URL is required")?;
            Ok(Arc::new(WebhookProvider::new(url, config.sms.timeout)?))
        }
        SmsProviderKind::Twilio => {
            let t = config
                .sms
                .twilio
                .as_ref()
                .ok_or("the PHONEKEY_TWILIO_* settings are required")?;
            Ok(Arc::new(TwilioProvider::new(
                &t.api_base,
                &t.account_sid,
                &t.auth_token,
                &t.from,
                config.sms.timeout,
            )?))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn default_template_ends_with_autofill_line() {
        let body = super::render(
            crate::config::DEFAULT_SMS_TEMPLATE,
            "auth.example.com",
            "123456",
        );
        assert!(body.ends_with("\n@auth.example.com #123456"), "{body}");
    }
}
