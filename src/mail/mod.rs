//! Outgoing email: one [`Mailer`] trait with interchangeable transports — `smtp` (lettre,
//! pooled), `file` (one `.eml` per message), `log` (a redacted line per message) and
//! `memory` (tests) — and the composition of an alert email from its templates.

pub mod content;
pub mod smtp;
pub mod templates;
mod transports;
pub mod unsubscribe;
pub mod webhook;

use std::sync::Arc;
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use lettre::Message;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};

use crate::config::{MailSettings, MailTransportKind};
use crate::redact::mask_addresses;
pub use smtp::SmtpMailer;
use templates::Rendered;
pub use transports::{FileMailer, LogMailer, MemoryMailer, StoredEmail};

/// What kind of failure a send met; decides between retrying and giving up at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The server could not be reached or the connection broke.
    Connection,
    Timeout,
    /// TLS negotiation failed (certificate, protocol).
    Tls,
    /// The server refused the credentials (a configuration problem: retried so that a fixed
    /// configuration still delivers).
    Auth,
    /// A 4xx reply: try again later.
    Transient,
    /// A 5xx reply such as 550 (no such mailbox): retrying cannot help.
    Permanent,
    /// The recipient address cannot be used at all.
    InvalidAddress,
    /// Writing the message failed (file transport) or the transport is misconfigured.
    Local,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Connection => "connection",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Tls => "tls",
            ErrorClass::Auth => "auth",
            ErrorClass::Transient => "transient",
            ErrorClass::Permanent => "permanent",
            ErrorClass::InvalidAddress => "invalid_address",
            ErrorClass::Local => "local",
        }
    }

    /// Permanent failures are not retried.
    pub fn is_permanent(self) -> bool {
        matches!(self, ErrorClass::Permanent | ErrorClass::InvalidAddress)
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{class}: {message}")]
pub struct SendError {
    pub class: ErrorClass,
    /// What went wrong, with every email address masked: it is logged and stored in
    /// `quota_alerts.last_error`.
    pub message: String,
}

impl SendError {
    /// An error whose text has its addresses masked: a server's reply may quote the recipient
    /// (in any case) or other addresses.
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        SendError {
            class,
            message: mask_addresses(&message.into()),
        }
    }
}

/// One message ready to go.
#[derive(Debug, Clone)]
pub struct OutgoingEmail {
    /// The Message-ID without angle brackets; the same for every attempt of one alert.
    pub message_id: String,
    /// The recipient's address (log it only through `redact::mask_email`).
    pub to: String,
    pub subject: String,
    pub message: Message,
}

/// Sends messages. Implementations decide how many go out at once.
pub trait Mailer: Send + Sync {
    /// The transport's name (`smtp`, `file`, `log`, `memory`), for reports.
    fn transport(&self) -> &'static str;

    /// Sends every message; one result per message, in order. Blocks until all are done.
    fn send_all(&self, emails: &[OutgoingEmail]) -> Vec<Result<(), SendError>>;
}

/// The mailer `mail.transport` names. Nothing connects or writes until the first send.
pub fn from_settings(settings: &MailSettings) -> Arc<dyn Mailer> {
    match settings.transport_kind() {
        MailTransportKind::Smtp => Arc::new(SmtpMailer::new(settings.smtp.clone())),
        MailTransportKind::File => {
            Arc::new(FileMailer::new(settings.file.dir.clone().unwrap_or_else(
                || crate::config::default_demo_dir().join("mail"),
            )))
        }
        MailTransportKind::Log => Arc::new(LogMailer),
    }
}

/// Builds the multipart (text + HTML) message, with the one-click unsubscribe headers when
/// `unsubscribe_link` is given. The recipient's name is reduced to one line and encoded by
/// lettre, so it can never add a header; an unusable address is an
/// [`ErrorClass::InvalidAddress`] error.
pub fn compose(
    settings: &MailSettings,
    to_address: &str,
    to_name: &str,
    rendered: &Rendered,
    message_id: &str,
    date: DateTime<Utc>,
    unsubscribe_link: Option<String>,
) -> Result<OutgoingEmail, SendError> {
    let address = to_address.trim().parse::<lettre::Address>().map_err(|e| {
        SendError::new(
            ErrorClass::InvalidAddress,
            format!("recipient address rejected before sending: {e}"),
        )
    })?;
    let name = templates::single_line(to_name);
    let to = Mailbox::new((!name.is_empty()).then_some(name), address);
    let from: Mailbox = settings.from.parse().map_err(|e| {
        SendError::new(
            ErrorClass::Local,
            format!("mail.from is not a mailbox: {e}"),
        )
    })?;
    let mut builder = Message::builder()
        .from(from)
        .to(to)
        .subject(templates::single_line(&rendered.subject))
        .message_id(Some(format!("<{message_id}>")))
        .date(SystemTime::from(date));
    if let Some(reply_to) = &settings.reply_to {
        let reply_to: Mailbox = reply_to.parse().map_err(|e| {
            SendError::new(
                ErrorClass::Local,
                format!("mail.reply_to is not a mailbox: {e}"),
            )
        })?;
        builder = builder.reply_to(reply_to);
    }
    if let Some(link) = unsubscribe_link {
        builder = builder
            .header(unsubscribe::ListUnsubscribe(link))
            .header(unsubscribe::ListUnsubscribePost);
    }
    let message = builder
        .multipart(
            MultiPart::alternative()
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .body(rendered.text.clone()),
                )
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(rendered.html.clone()),
                ),
        )
        .map_err(|e| SendError::new(ErrorClass::Local, format!("cannot build the message: {e}")))?;
    Ok(OutgoingEmail {
        message_id: message_id.to_string(),
        to: to_address.trim().to_string(),
        subject: rendered.subject.clone(),
        message,
    })
}

/// The domain of `mail.from`, used on the right of Message-IDs.
pub fn sender_domain(settings: &MailSettings) -> String {
    settings
        .from
        .parse::<Mailbox>()
        .map(|m| m.email.domain().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}
