//! `[mail]`, `[mail.smtp]` and `[mail.file]`: how alert emails leave the daemon.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::secrets::{read_secret, serialize_secret, validate_secret_file};
use super::{ConfigError, HumanDuration};

/// The shortest `mail.unsubscribe_secret` accepted, in characters.
const MIN_UNSUBSCRIBE_SECRET: usize = 32;

/// How alert emails leave the daemon (`mail.transport`).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MailTransportKind {
    /// An SMTP relay (`[mail.smtp]`).
    Smtp,
    /// One `.eml` file per message in `mail.file.dir`.
    File,
    /// A redacted log line per message; nothing is delivered.
    Log,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailSettings {
    /// `smtp`, `file` or `log`. Unset: `smtp`, or `file` under `--demo`.
    pub transport: Option<MailTransportKind>,
    /// The `From` mailbox, e.g. `Example Usage <usage@example.com>`.
    pub from: String,
    pub reply_to: Option<String>,
    /// A directory whose `quota_alert.subject.txt`, `quota_alert.txt` or `quota_alert.html`
    /// replace the built-in templates.
    pub templates_dir: Option<PathBuf>,
    /// Links shown in the alert emails when set: `preferences_url` is the "manage
    /// notifications" link.
    pub upgrade_url: Option<String>,
    pub preferences_url: Option<String>,
    /// The application's one-click unsubscribe endpoint (https): with it, every alert email
    /// carries `List-Unsubscribe: <URL?token=…>` and `List-Unsubscribe-Post`.
    pub unsubscribe_url: Option<String>,
    /// Signs the unsubscribe tokens (at least 32 characters). Kept out of logs;
    /// `unsubscribe_secret_file` or the systemd credential `unsubscribe-secret` are preferred.
    #[serde(serialize_with = "serialize_secret")]
    pub unsubscribe_secret: Option<SecretString>,
    pub unsubscribe_secret_file: Option<PathBuf>,
    pub smtp: SmtpSettings,
    pub file: FileMailSettings,
}

impl Default for MailSettings {
    fn default() -> Self {
        MailSettings {
            transport: None,
            from: "usage-worker@localhost".into(),
            reply_to: None,
            templates_dir: None,
            upgrade_url: None,
            preferences_url: None,
            unsubscribe_url: None,
            unsubscribe_secret: None,
            unsubscribe_secret_file: None,
            smtp: SmtpSettings::default(),
            file: FileMailSettings::default(),
        }
    }
}

impl MailSettings {
    pub fn transport_kind(&self) -> MailTransportKind {
        self.transport.unwrap_or(MailTransportKind::Smtp)
    }

    /// The one-click unsubscribe endpoint and its signing secret (from `unsubscribe_secret`,
    /// `unsubscribe_secret_file` or the systemd credential `unsubscribe-secret`) when
    /// `unsubscribe_url` is set; `None` otherwise.
    pub fn unsubscribe(&self) -> Result<Option<(url::Url, SecretString)>, ConfigError> {
        let Some(url) = &self.unsubscribe_url else {
            return Ok(None);
        };
        if !is_https_url(url) {
            return Err(ConfigError::invalid(
                "mail.unsubscribe_url",
                format!(
                    "`{url}` is not an https URL with a host; mail providers only follow one-click unsubscribe links over https, e.g. https://example.com/email/unsubscribe"
                ),
            ));
        }
        let secret = read_secret(
            "mail.unsubscribe_secret",
            self.unsubscribe_secret.as_ref(),
            self.unsubscribe_secret_file.as_deref(),
            "unsubscribe-secret",
        )?
        .ok_or_else(|| {
            ConfigError::invalid(
                "mail.unsubscribe_secret",
                "is not set but mail.unsubscribe_url is; set mail.unsubscribe_secret_file (or the systemd credential unsubscribe-secret) to at least 32 random characters, e.g. from `openssl rand -hex 32`",
            )
        })?;
        if secret.expose_secret().chars().count() < MIN_UNSUBSCRIBE_SECRET {
            return Err(ConfigError::invalid(
                "mail.unsubscribe_secret",
                format!(
                    "is shorter than {MIN_UNSUBSCRIBE_SECRET} characters; expected at least that many random characters, e.g. from `openssl rand -hex 32`"
                ),
            ));
        }
        url::Url::parse(url)
            .map(|url| Some((url, secret)))
            .map_err(|e| ConfigError::invalid("mail.unsubscribe_url", e.to_string()))
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.validate_addresses()?;
        validate_secret_file(
            "mail.unsubscribe_secret_file",
            self.unsubscribe_secret_file.as_deref(),
        )?;
        self.unsubscribe()?;
        if self.transport_kind() == MailTransportKind::Smtp {
            self.smtp.validate_relay()?;
        }
        self.smtp.validate()?;
        if self.transport_kind() == MailTransportKind::File && self.file.dir.is_none() {
            return Err(ConfigError::invalid(
                "mail.file.dir",
                "is not set but mail.transport is `file`; expected a directory, e.g. /var/lib/usage-worker/mail",
            ));
        }
        Ok(())
    }

    fn validate_addresses(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("mail.from", Some(&self.from)),
            ("mail.reply_to", self.reply_to.as_ref()),
        ] {
            if let Some(value) = value
                && let Err(e) = value.parse::<lettre::message::Mailbox>()
            {
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "`{value}` is not a mailbox ({e}); expected e.g. `Example Usage <usage@example.com>`"
                    ),
                ));
            }
        }
        for (key, value) in [
            ("mail.upgrade_url", &self.upgrade_url),
            ("mail.preferences_url", &self.preferences_url),
        ] {
            if let Some(url) = value
                && !is_http_url(url)
            {
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "`{url}` is not an http(s) URL; expected e.g. https://example.com/billing"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// An absolute `https` URL with a host, as a one-click unsubscribe link must be (`https:///path`
/// is not: a URL parser reads its path as the host, so the authority is checked as written).
fn is_https_url(text: &str) -> bool {
    let authority = text
        .get(..8)
        .filter(|scheme| scheme.eq_ignore_ascii_case("https://"))
        .map(|_| &text[8..]);
    authority.is_some_and(|rest| !rest.is_empty() && !rest.starts_with(['/', '?', '#']))
        && url::Url::parse(text).is_ok_and(|url| url.scheme() == "https" && url.host().is_some())
}

/// An absolute `http` or `https` URL with a host, as a link in an email must be.
fn is_http_url(text: &str) -> bool {
    url::Url::parse(text)
        .is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (required, never skipped). Port 587.
    Starttls,
    /// TLS from the first byte (SMTPS). Port 465.
    Tls,
    /// No encryption: loopback hosts only. Port 25.
    None,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpSettings {
    pub host: String,
    /// Default: 587 (starttls), 465 (tls) or 25 (none).
    pub port: Option<u16>,
    pub tls: SmtpTls,
    pub username: Option<String>,
    /// Kept out of logs; `password_file` or the systemd credential `smtp-password` are preferred.
    #[serde(serialize_with = "serialize_secret")]
    pub password: Option<SecretString>,
    pub password_file: Option<PathBuf>,
    /// Limit for connecting and for each SMTP command.
    pub timeout: HumanDuration,
    /// Pooled connections, and so the number of messages sent at once. lettre's client leaves
    /// Nagle's algorithm on, which costs each message one delayed ACK (about 40 ms): throughput
    /// comes from connections in parallel.
    pub pool_size: u32,
}

impl Default for SmtpSettings {
    fn default() -> Self {
        SmtpSettings {
            host: "localhost".into(),
            port: None,
            tls: SmtpTls::Starttls,
            username: None,
            password: None,
            password_file: None,
            timeout: HumanDuration(Duration::from_secs(30)),
            pool_size: 32,
        }
    }
}

impl SmtpSettings {
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        })
    }

    /// The SMTP password from `mail.smtp.password`, `mail.smtp.password_file`, or the systemd
    /// credential `smtp-password`.
    pub fn password(&self) -> Result<Option<SecretString>, ConfigError> {
        read_secret(
            "mail.smtp.password",
            self.password.as_ref(),
            self.password_file.as_deref(),
            "smtp-password",
        )
    }

    /// Checks that only matter when mail goes through this relay.
    fn validate_relay(&self) -> Result<(), ConfigError> {
        if self.host.trim().is_empty() {
            return Err(ConfigError::invalid(
                "mail.smtp.host",
                "is empty; expected the SMTP relay's host name, e.g. smtp.example.com",
            ));
        }
        if self.tls == SmtpTls::None && !is_loopback_host(&self.host) {
            return Err(ConfigError::invalid(
                "mail.smtp.tls",
                format!(
                    "`none` sends mail and password in clear text and is only allowed for loopback hosts, not `{}`; expected starttls or tls",
                    self.host
                ),
            ));
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.pool_size == 0 || self.pool_size > 64 {
            return Err(ConfigError::invalid(
                "mail.smtp.pool_size",
                format!("{} is out of range; expected 1 to 64", self.pool_size),
            ));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::invalid(
                "mail.smtp.timeout",
                "must be longer than 0s; expected e.g. 30s",
            ));
        }
        validate_secret_file("mail.smtp.password_file", self.password_file.as_deref())?;
        if self.username.is_none() && (self.password.is_some() || self.password_file.is_some()) {
            return Err(ConfigError::invalid(
                "mail.smtp.username",
                "is not set but a password is; set both, or neither for a relay without authentication",
            ));
        }
        Ok(())
    }
}

/// True for `localhost` and loopback addresses: the only hosts `mail.smtp.tls = "none"` may use.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct FileMailSettings {
    /// Where the `file` transport writes `.eml` files. Default under `--demo`: the demo directory.
    pub dir: Option<PathBuf>,
}
