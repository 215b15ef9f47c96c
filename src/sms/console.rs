use std::io::Write;

use super::{SendFuture, SmsMessage, SmsProvider};

/// Writes each SMS to standard output, whole: the development stand-in for a
/// real provider, and the only place a code is ever printed.
pub struct ConsoleProvider;

impl SmsProvider for ConsoleProvider {
    fn name(&self) -> &'static str {
        "console"
    }

    fn send<'a>(&'a self, message: &'a SmsMessage) -> SendFuture<'a> {
        Box::pin(async move {
            let mut out = std::io::stdout().lock();
            // A closed stdout must not fail the request: the message is for a developer.
            let _ = writeln!(
                out,
                "--- SMS to {} ---\n{}\n--- end of SMS ---",
                message.to, message.body
            );
            let _ = out.flush();
            Ok(())
        })
    }
}
