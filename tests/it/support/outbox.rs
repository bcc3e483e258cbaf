//! Stand-ins for the alert outbox's transports: a mailer that crashes after sending, and a
//! webhook transport that records what it is given.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::SecretString;
use usage_worker::config::{HumanDuration, WebhookEndpoint};
use usage_worker::mail::webhook::{PostError, WebhookMessage, WebhookTarget, WebhookTransport};
use usage_worker::mail::{Mailer, OutgoingEmail, SendError};

use super::webhooks::SECRET_A;

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

/// Answers `200` to every request and keeps the messages, in order.
#[derive(Default)]
pub struct RecordingWebhooks {
    posted: Mutex<Vec<WebhookMessage>>,
}

impl RecordingWebhooks {
    /// The bodies posted so far, parsed.
    pub fn bodies(&self) -> Vec<serde_json::Value> {
        self.posted
            .lock()
            .unwrap()
            .iter()
            .map(|m| serde_json::from_str(&m.body).expect("a JSON body"))
            .collect()
    }
}

impl WebhookTransport for RecordingWebhooks {
    fn post_all(
        &self,
        _target: &WebhookTarget,
        messages: &[WebhookMessage],
    ) -> Vec<Result<u16, PostError>> {
        self.posted.lock().unwrap().extend_from_slice(messages);
        messages.iter().map(|_| Ok(200)).collect()
    }
}

/// An endpoint nobody listens on, for a [`RecordingWebhooks`] transport.
pub fn unreachable_endpoint() -> WebhookEndpoint {
    WebhookEndpoint {
        url: "http://127.0.0.1:9/hooks/usage".into(),
        secret: Some(SecretString::from(SECRET_A)),
        secret_file: None,
        secrets: Vec::new(),
        secret_files: Vec::new(),
        events: None,
        connect_timeout: HumanDuration(Duration::from_secs(1)),
        timeout: HumanDuration(Duration::from_secs(1)),
    }
}

/// The text of a received message with quoted-printable soft line breaks and `=3D` undone:
/// enough to search the plain ASCII bodies of the alert emails.
pub fn unfolded(data: &str) -> String {
    data.replace("=\r\n", "").replace("=3D", "=")
}
