//! Stand-ins for the alert outbox's transports.

use std::sync::Arc;

use usage_worker::mail::{Mailer, OutgoingEmail, SendError};

/// Sends through the real transport, then dies before the job can record the result.
pub struct CrashAfterSend(pub Arc<dyn Mailer>);

impl Mailer for CrashAfterSend {
    fn transport(&self) -> &'static str {
        "smtp"
    }

    fn send_all(&self, emails: &[OutgoingEmail]) -> Vec<Result<(), SendError>> {
        let results = self.0.send_all(emails);
        assert!(results.iter().all(Result::is_ok));
        panic!("simulated crash between send and commit");
    }
}
