//! The HTTP transport of webhooks: ureq with rustls, connect and total timeouts, no redirects.

use std::time::{SystemTime, UNIX_EPOCH};

use super::{PostError, WebhookErrorClass, WebhookMessage, WebhookTarget, WebhookTransport, sign};

/// HTTP(S) with ureq and rustls; redirects are never followed.
pub struct HttpTransport;

impl HttpTransport {
    fn agent(target: &WebhookTarget) -> ureq::Agent {
        ureq::Agent::config_builder()
            .timeout_connect(Some(target.connect_timeout.min(target.timeout)))
            .timeout_global(Some(target.timeout))
            .max_redirects(0)
            .http_status_as_error(false)
            .user_agent(concat!("usage-worker/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent()
    }

    fn post(
        agent: &ureq::Agent,
        target: &WebhookTarget,
        message: &WebhookMessage,
    ) -> Result<u16, PostError> {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let signature = sign(&message.webhook_id, timestamp, &message.body, &target.keys);
        let response = agent
            .post(&target.url)
            .header("content-type", "application/json")
            .header("webhook-id", &message.webhook_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .send(message.body.as_bytes())
            .map_err(|e| transport_error(&target.host, e))?;
        let status = response.status().as_u16();
        if response.status().is_success() {
            return Ok(status);
        }
        let class = WebhookErrorClass::of_status(status);
        Err(PostError {
            class,
            status: Some(status),
            message: format!("{} answered {status}", target.host),
        })
    }
}

/// A failure before any answer, described without the URL (its query may hold a token).
fn transport_error(host: &str, error: ureq::Error) -> PostError {
    let (class, what) = match &error {
        ureq::Error::Timeout(t) => (WebhookErrorClass::Timeout, format!("timed out ({t})")),
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) => {
            (WebhookErrorClass::Tls, format!("TLS failed: {error}"))
        }
        ureq::Error::BadUri(_) => (WebhookErrorClass::Local, "the URL cannot be used".into()),
        ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            (WebhookErrorClass::Timeout, format!("timed out: {e}"))
        }
        _ => (
            WebhookErrorClass::Connection,
            format!("cannot connect: {error}"),
        ),
    };
    PostError {
        class,
        status: None,
        message: format!("{host}: {what}"),
    }
}

impl WebhookTransport for HttpTransport {
    fn post_all(
        &self,
        target: &WebhookTarget,
        messages: &[WebhookMessage],
    ) -> Vec<Result<u16, PostError>> {
        let agent = HttpTransport::agent(target);
        let mut results = Vec::with_capacity(messages.len());
        let mut unreachable: Option<PostError> = None;
        for message in messages {
            let result = match &unreachable {
                Some(first) => Err(PostError {
                    message: format!("not tried: {}", first.message),
                    ..first.clone()
                }),
                None => HttpTransport::post(&agent, target, message),
            };
            if let Err(e) = &result
                && e.class.is_unreachable()
                && unreachable.is_none()
            {
                unreachable = Some(e.clone());
            }
            results.push(result);
        }
        results
    }
}
