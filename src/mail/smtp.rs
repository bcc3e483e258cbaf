//! The `smtp` transport: lettre's pooled async client on a small runtime of its own, so the
//! (blocking) jobs can call it from any thread, with or without a runtime of their own.
//! Messages go out concurrently, at most `mail.smtp.pool_size` at once.

use std::sync::{Arc, Mutex};

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::{self, PoolConfig};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use secrecy::ExposeSecret;
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{ErrorClass, Mailer, OutgoingEmail, SendError};
use crate::config::{SmtpSettings, SmtpTls};

pub struct SmtpMailer {
    settings: SmtpSettings,
    /// Built at the first send: the runtime, the TLS setup and the password are not needed
    /// by runs that send nothing.
    connected: Mutex<Option<Arc<Connected>>>,
}

struct Connected {
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
    runtime: Option<Runtime>,
}

impl Drop for Connected {
    fn drop(&mut self) {
        // lettre's pool spawns its clean-up when dropped, so it must be dropped inside its
        // runtime; the runtime is then shut down without blocking (this may run in async code).
        if let Some(runtime) = self.runtime.take() {
            {
                let _entered = runtime.enter();
                self.transport.take();
            }
            runtime.shutdown_background();
        }
    }
}

impl SmtpMailer {
    pub fn new(settings: SmtpSettings) -> Self {
        SmtpMailer {
            settings,
            connected: Mutex::new(None),
        }
    }

    fn connected(&self) -> Result<Arc<Connected>, SendError> {
        let mut slot = self.connected.lock().map_err(|_| {
            SendError::new(ErrorClass::Local, "the SMTP transport's lock is poisoned")
        })?;
        if let Some(connected) = slot.as_ref() {
            return Ok(connected.clone());
        }
        let connected = Arc::new(self.build()?);
        *slot = Some(connected.clone());
        Ok(connected)
    }

    fn build(&self) -> Result<Connected, SendError> {
        let s = &self.settings;
        let local = |message: String| SendError::new(ErrorClass::Local, message);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("usage-worker-smtp")
            .enable_all()
            .build()
            .map_err(|e| local(format!("cannot start the SMTP runtime: {e}")))?;
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
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(s.host.clone())
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
        // The pool starts a clean-up task, so it is built inside its runtime.
        let transport = {
            let _entered = runtime.enter();
            builder.build()
        };
        Ok(Connected {
            transport: Some(transport),
            runtime: Some(runtime),
        })
    }
}

impl Mailer for SmtpMailer {
    fn transport(&self) -> &'static str {
        "smtp"
    }

    fn send_all(&self, emails: &[OutgoingEmail]) -> Vec<Result<(), SendError>> {
        let connected = match self.connected() {
            Ok(c) => c,
            Err(e) => return emails.iter().map(|_| Err(e.clone())).collect(),
        };
        let (Some(transport), Some(runtime)) = (&connected.transport, &connected.runtime) else {
            return emails
                .iter()
                .map(|_| {
                    Err(SendError::new(
                        ErrorClass::Local,
                        "the SMTP transport is shut down",
                    ))
                })
                .collect();
        };
        let work: Vec<_> = emails
            .iter()
            .map(|e| (e.message.envelope().clone(), e.message.formatted()))
            .collect();
        let count = work.len();
        let transport = transport.clone();
        let limit = Arc::new(Semaphore::new(self.settings.pool_size.max(1) as usize));
        let (done, results) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            let mut tasks = JoinSet::new();
            for (index, (envelope, bytes)) in work.into_iter().enumerate() {
                let Ok(permit) = limit.clone().acquire_owned().await else {
                    break;
                };
                let transport = transport.clone();
                tasks.spawn(async move {
                    let result = transport.send_raw(&envelope, &bytes).await;
                    drop(permit);
                    (index, result.map(|_| ()).map_err(|e| classify(&e)))
                });
            }
            let mut out: Vec<Option<Result<(), SendError>>> = vec![None; count];
            while let Some(joined) = tasks.join_next().await {
                if let Ok((index, result)) = joined {
                    out[index] = Some(result);
                }
            }
            let _ = done.send(out);
        });
        let out = results.recv().unwrap_or_else(|_| vec![None; count]);
        out.into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(SendError::new(
                        ErrorClass::Local,
                        "the send task did not finish",
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
        None if error.is_timeout() => ErrorClass::Timeout,
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
