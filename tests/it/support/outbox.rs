//! A stand-in for the alert outbox's mail transport that crashes after sending, and what the
//! alert tests read from received messages.

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

/// The text of a received message with quoted-printable soft line breaks and `=3D` undone:
/// enough to search the plain ASCII bodies of the alert emails.
pub fn unfolded(data: &str) -> String {
    data.replace("=\r\n", "").replace("=3D", "=")
}
