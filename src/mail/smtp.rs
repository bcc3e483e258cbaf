//! The `smtp` transport: lettre's pooled blocking client. Jobs run on blocking threads, so
//! sending blocks one of them and needs no async runtime of its own. Messages go out
//! concurrently, at most `mail.smtp.pool_size` at once.

use std::io::ErrorKind;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::{self, PoolConfig};
use lettre::{SmtpTransport, Transport};
use secrecy::ExposeSecret;

use super::{ErrorClass, Mailer, OutgoingEmail, SendError};
use crate::config::{SmtpSettings, SmtpTls};

pub struct SmtpMailer {
    settings: SmtpSettings,
    /// Built at the first send: the TLS setup and the password are not needed by runs that
    /// send nothing. Clones share one connection pool.
    transport: Mutex<Option<SmtpTransport>>,
}

impl SmtpMailer {
    pub fn new(settings: SmtpSettings) -> Self {
        SmtpMailer {
            settings,
            transport: Mutex::new(None),
        }
    }

    fn transport(&self) -> Result<SmtpTransport, SendError> {
        let mut slot = self.transport.lock().map_err(|_| {
            SendError::new(ErrorClass::Local, "the SMTP transport's lock is poisoned")
        })?;
        if let Some(transport) = slot.as_ref() {
            return Ok(transport.clone());
        }
        let transport = self.build()?;
        *slot = Some(transport.clone());
        Ok(transport)
    }

    fn build(&self) -> Result<SmtpTransport, SendError> {
        let s = &self.settings;
        let local = |message: String| SendError::new(ErrorClass::Local, message);
        let tls_parameters = || {
            TlsParameters::new(s.host.clone()).map_err(|e| {
                SendError::new(
                    ErrorClass::Tls,
                    format!("cannot set up TLS for {} (mail.smtp.tls): {e}", s.host),
                )
            })
        };
        let tls = match s.tls {
            SmtpTls::Starttls => Tls::Required(tls_parameters()?),
            SmtpTls::Tls => Tls::Wrapper(tls_parameters()?),
            SmtpTls::None => Tls::None,
        };
        let mut builder = SmtpTransport::builder_dangerous(s.host.clone())
            .port(s.effective_port())
            .tls(tls)
            .timeout(Some(s.timeout.0))
            .pool_config(PoolConfig::new().max_size(s.pool_size));
        if let Some(username) = &s.username {
            let password = s
                .password()
                .map_err(|e| local(e.to_string()))?
                .ok_or_else(|| {
                    local(
                        "mail.smtp.username is set but no password was found in mail.smtp.password, \
                         mail.smtp.password_file or the credential smtp-password"
                            .into(),
                    )
                })?;
            builder = builder.credentials(Credentials::new(
                username.clone(),
                password.expose_secret().to_string(),
            ));
        }
        Ok(builder.build())
    }
}

impl Mailer for SmtpMailer {
    fn transport(&self) -> &'static str {
        "smtp"
    }

    /// Sends on this thread and on up to `pool_size - 1` helper threads, each taking the next
    /// unsent message until none is left.
    fn send_all(&self, emails: &[OutgoingEmail]) -> Vec<Result<(), SendError>> {
        let transport = match self.transport() {
            Ok(t) => t,
            Err(e) => return emails.iter().map(|_| Err(e.clone())).collect(),
        };
        let next = AtomicUsize::new(0);
        let send_remaining = || {
            let mut sent = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(email) = emails.get(index) else {
                    return sent;
                };
                let result = transport
                    .send_raw(email.message.envelope(), &email.message.formatted())
                    .map(|_| ())
                    .map_err(|e| classify(&e));
                sent.push((index, result));
            }
        };
        let senders = (self.settings.pool_size.max(1) as usize).min(emails.len());
        let sent = thread::scope(|scope| {
            // A helper that cannot be started leaves its share to the others.
            let helpers: Vec<_> = (1..senders)
                .filter_map(|_| {
                    thread::Builder::new()
                        .name("usage-worker-smtp".into())
                        .spawn_scoped(scope, send_remaining)
                        .ok()
                })
                .collect();
            let mut sent = send_remaining();
            for helper in helpers {
                sent.extend(helper.join().unwrap_or_default());
            }
            sent
        });
        let mut results: Vec<Option<Result<(), SendError>>> = vec![None; emails.len()];
        for (index, result) in sent {
            results[index] = Some(result);
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(SendError::new(
                        ErrorClass::Local,
                        "the sending thread stopped before this message was sent",
                    ))
                })
            })
            .collect()
    }
}

/// Sorts lettre's errors into classes: 5xx replies are permanent (except the
/// authentication codes, which are a configuration problem); everything else is retried.
pub fn classify(error: &smtp::Error) -> SendError {
    let class = match error.status() {
        Some(code) => {
            let code = code.to_string();
            if matches!(code.as_str(), "454" | "530" | "534" | "535" | "538") {
                ErrorClass::Auth
            } else if error.is_permanent() {
                ErrorClass::Permanent
            } else {
                ErrorClass::Transient
            }
        }
        None if is_timeout(error) => ErrorClass::Timeout,
        None if error.is_tls() => ErrorClass::Tls,
        None => ErrorClass::Connection,
    };
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    SendError::new(class, message)
}

/// The blocking client meets `mail.smtp.timeout` while connecting as `TimedOut`, but while
/// reading or writing as a socket timeout, which Unix reports as `WouldBlock`.
fn is_timeout(error: &smtp::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            return matches!(io.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock);
        }
        source = inner.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    use lettre::Message;

    use super::*;
    use crate::config::HumanDuration;

    fn email() -> OutgoingEmail {
        let message = Message::builder()
            .from("usage@example.com".parse().unwrap())
            .to("ada@example.com".parse().unwrap())
            .subject("quota")
            .body(String::from("80 %"))
            .unwrap();
        OutgoingEmail {
            message_id: "1@example.com".into(),
            to: "ada@example.com".into(),
            subject: "quota".into(),
            message,
        }
    }

    #[test]
    fn a_server_that_accepts_and_never_answers_is_a_timeout() {
        // Accepted by the kernel's backlog, never greeted.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let mailer = SmtpMailer::new(SmtpSettings {
            host: "127.0.0.1".into(),
            port: Some(silent.local_addr().unwrap().port()),
            tls: SmtpTls::None,
            timeout: HumanDuration(Duration::from_millis(300)),
            ..SmtpSettings::default()
        });
        let started = Instant::now();
        let results = mailer.send_all(&[email()]);
        assert_eq!(results[0].as_ref().unwrap_err().class, ErrorClass::Timeout);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn an_empty_batch_has_no_results() {
        let mailer = SmtpMailer::new(SmtpSettings {
            host: "127.0.0.1".into(),
            port: Some(9),
            tls: SmtpTls::None,
            ..SmtpSettings::default()
        });
        assert!(mailer.send_all(&[]).is_empty());
    }
}
