//! The transports that deliver nowhere remote: `file`, `log` and `memory`.

use std::path::PathBuf;
use std::sync::Mutex;

use super::{ErrorClass, Mailer, OutgoingEmail, SendError};
use crate::redact::mask_email;

/// Writes each message to `<dir>/<message-id>.eml`, readable by any mail client. A message
/// sent again (after a crash) replaces its own file instead of adding one.
pub struct FileMailer {
    dir: PathBuf,
}

impl FileMailer {
    pub fn new(dir: PathBuf) -> Self {
        FileMailer { dir }
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    fn write(&self, email: &OutgoingEmail) -> Result<(), SendError> {
        let local = |e: std::io::Error, what: &str| {
            SendError::new(
                ErrorClass::Local,
                format!("{what} in {} (mail.file.dir): {e}", self.dir.display()),
            )
        };
        std::fs::create_dir_all(&self.dir).map_err(|e| local(e, "cannot create the directory"))?;
        let stem: String = email
            .message_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = self.dir.join(format!("{stem}.eml"));
        let partial = self.dir.join(format!(".{stem}.eml.partial"));
        std::fs::write(&partial, email.message.formatted())
            .map_err(|e| local(e, "cannot write a message"))?;
        std::fs::rename(&partial, &path).map_err(|e| local(e, "cannot rename a message"))?;
        Ok(())
    }
}

impl Mailer for FileMailer {
    fn transport(&self) -> &'static str {
        "file"
    }

    fn send_all(&self, emails: &[OutgoingEmail]) -> Vec<Result<(), SendError>> {
        emails.iter().map(|e| self.write(e)).collect()
    }
}

/// Logs one line per message (recipient masked) and delivers nothing.
pub struct LogMailer;

impl Mailer for LogMailer {
    fn transport(&self) -> &'static str {
        "log"
    }

    fn send_all(&self, emails: &[OutgoingEmail]) -> Vec<Result<(), SendError>> {
        emails
            .iter()
            .map(|e| {
                tracing::info!(
                    mail.to = %mask_email(&e.to),
                    mail.subject = %e.subject,
                    mail.message_id = %e.message_id,
                    "email not delivered (mail.transport = log)"
                );
                Ok(())
            })
            .collect()
    }
}

/// A message kept by [`MemoryMailer`].
#[derive(Debug, Clone)]
pub struct StoredEmail {
    pub message_id: String,
    pub to: String,
    pub subject: String,
    /// The whole message as it would go over the wire.
    pub raw: String,
}

/// Keeps messages in memory (tests).
#[derive(Default)]
pub struct MemoryMailer {
    sent: Mutex<Vec<StoredEmail>>,
}

impl MemoryMailer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn sent(&self) -> Vec<StoredEmail> {
        self.sent.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Mailer for MemoryMailer {
    fn transport(&self) -> &'static str {
        "memory"
    }

    fn send_all(&self, emails: &[OutgoingEmail]) -> Vec<Result<(), SendError>> {
        emails
            .iter()
            .map(|e| {
                let mut sent = self.sent.lock().map_err(|_| {
                    SendError::new(ErrorClass::Local, "the memory mailer's lock is poisoned")
                })?;
                sent.push(StoredEmail {
                    message_id: e.message_id.clone(),
                    to: e.to.clone(),
                    subject: e.subject.clone(),
                    raw: String::from_utf8_lossy(&e.message.formatted()).into_owned(),
                });
                Ok(())
            })
            .collect()
    }
}
