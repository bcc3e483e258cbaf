//! Quota and credit alerts as webhooks, signed per the Standard Webhooks specification
//! (<https://www.standardwebhooks.com/>): the payload, the signature, and the HTTP transport.
//!
//! Signing uses `ring` (already linked through rustls) rather than a webhook crate, whose
//! extra dependencies (`http`, `time`, a second base64) would only serve this one function.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use secrecy::ExposeSecret;

use crate::config::{AlertSettings, ConfigError, SecretBytes, WebhookEndpoint};

mod http;
mod payload;

pub use http::HttpTransport;
pub use payload::{
    CreditEventData, EXHAUSTED_EVENT, FORECAST_EVENT, QuotaEventData, QuotaEventFacts,
    SubjectPayload, THRESHOLD_EVENT, event_type, quota_event_body,
};

/// The `webhook-signature` header value: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`
/// for each key, space-separated, so a receiver that knows any one key verifies the request.
pub fn sign(webhook_id: &str, timestamp: i64, body: &str, keys: &[SecretBytes]) -> String {
    let signed = format!("{webhook_id}.{timestamp}.{body}");
    keys.iter()
        .map(|key| {
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.expose_secret());
            let tag = ring::hmac::sign(&key, signed.as_bytes());
            format!(
                "v1,{}",
                base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part);
    }
    context
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A configured endpoint, its secrets decoded.
pub struct WebhookTarget {
    /// Stable while the URL stays the same (secrets may rotate): names the endpoint's row and
    /// ends every `webhook-id` sent to it.
    pub key: String,
    pub url: String,
    /// For logs, reports and metrics: never the path or query, which may carry a token.
    pub host: String,
    /// Changes with the URL or any secret: a `410 Gone` disables the endpoint until it does.
    pub config_hash: String,
    pub keys: Vec<SecretBytes>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub endpoint: WebhookEndpoint,
}

impl WebhookTarget {
    pub fn new(endpoint: &WebhookEndpoint, index: usize) -> Result<WebhookTarget, ConfigError> {
        let keys = endpoint.signing_keys(index)?;
        let mut parts: Vec<&[u8]> = vec![endpoint.url.as_bytes()];
        parts.extend(keys.iter().map(|k| k.expose_secret()));
        Ok(WebhookTarget {
            key: sha256_hex(&[endpoint.url.as_bytes()])[..16].to_string(),
            url: endpoint.url.clone(),
            host: endpoint.host(),
            config_hash: sha256_hex(&parts),
            keys,
            connect_timeout: endpoint.connect_timeout.0,
            timeout: endpoint.timeout.0,
            endpoint: endpoint.clone(),
        })
    }

    /// Every endpoint of `alerts.webhooks`.
    pub fn all(settings: &AlertSettings) -> Result<Vec<WebhookTarget>, ConfigError> {
        settings
            .webhooks
            .iter()
            .enumerate()
            .map(|(index, endpoint)| WebhookTarget::new(endpoint, index))
            .collect()
    }
}

/// The stable `webhook-id` of one alert at one endpoint: every attempt carries it.
pub fn webhook_id(alert_id: i64, endpoint_key: &str) -> String {
    format!("msg_{alert_id}_{endpoint_key}")
}

/// The subject an alert is about, as its payload says: `{"type": "user", "id": …}`, or
/// One request to make: its stable id and body.
#[derive(Debug, Clone)]
pub struct WebhookMessage {
    pub webhook_id: String,
    pub body: String,
}

/// What kind of failure a delivery met; decides between retrying and giving up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookErrorClass {
    /// No answer in time, or `408 Request Timeout`.
    Timeout,
    Connection,
    Tls,
    /// A 5xx answer.
    ServerError,
    /// `429 Too Many Requests`.
    RateLimited,
    /// Another 4xx answer: the endpoint refuses this request; retrying cannot help.
    Rejected,
    /// `410 Gone`: the endpoint asks not to be called again.
    Gone,
    /// A 3xx answer: redirects are not followed.
    Redirect,
    /// The request could not be made here (a bad URL).
    Local,
}

impl WebhookErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookErrorClass::Timeout => "timeout",
            WebhookErrorClass::Connection => "connection",
            WebhookErrorClass::Tls => "tls",
            WebhookErrorClass::ServerError => "server_error",
            WebhookErrorClass::RateLimited => "rate_limited",
            WebhookErrorClass::Rejected => "rejected",
            WebhookErrorClass::Gone => "gone",
            WebhookErrorClass::Redirect => "redirect",
            WebhookErrorClass::Local => "local",
        }
    }

    pub fn is_permanent(self) -> bool {
        matches!(
            self,
            WebhookErrorClass::Rejected | WebhookErrorClass::Gone | WebhookErrorClass::Redirect
        )
    }

    /// The endpoint cannot be reached at all: later requests in the same run would wait for
    /// the same timeout, so they are not made.
    fn is_unreachable(self) -> bool {
        matches!(
            self,
            WebhookErrorClass::Timeout | WebhookErrorClass::Connection | WebhookErrorClass::Tls
        )
    }

    /// The class of a non-2xx status code.
    pub fn of_status(status: u16) -> WebhookErrorClass {
        match status {
            408 => WebhookErrorClass::Timeout,
            410 => WebhookErrorClass::Gone,
            429 => WebhookErrorClass::RateLimited,
            300..=399 => WebhookErrorClass::Redirect,
            500..=599 => WebhookErrorClass::ServerError,
            _ => WebhookErrorClass::Rejected,
        }
    }
}

impl std::fmt::Display for WebhookErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{class}: {message}")]
pub struct PostError {
    pub class: WebhookErrorClass,
    /// The answer's status code, when there was one.
    pub status: Option<u16>,
    pub message: String,
}

/// Sends webhook requests. Every attempt is signed with the time it is made.
pub trait WebhookTransport: Send + Sync {
    /// POSTs every message to `target`, in order; one result (the 2xx status, or why not)
    /// per message. Blocks until all are done or given up.
    fn post_all(
        &self,
        target: &WebhookTarget,
        messages: &[WebhookMessage],
    ) -> Vec<Result<u16, PostError>>;
}

/// The default transport.
pub fn http_transport() -> Arc<dyn WebhookTransport> {
    Arc::new(HttpTransport)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(secret: &str) -> SecretBytes {
        crate::config::decode_secret(secret).unwrap()
    }

    /// The vector of the reference implementations' tests (standard-webhooks, libraries/).
    #[test]
    fn the_signature_matches_the_reference_libraries_test_vector() {
        let keys = [key("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")];
        assert_eq!(
            sign(
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1_649_367_553,
                r#"{"email":"test@example.com","username":"test_user"}"#,
                &keys
            ),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn several_keys_give_one_signature_each_separated_by_spaces() {
        let one = key("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD");
        let two = key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let both = sign("msg_1", 1, "{}", &[one, two]);
        let first = sign(
            "msg_1",
            1,
            "{}",
            &[key("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")],
        );
        let second = sign(
            "msg_1",
            1,
            "{}",
            &[key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")],
        );
        assert_eq!(both, format!("{first} {second}"));
    }

    #[test]
    fn status_codes_are_classified_for_retrying() {
        for (status, class, permanent) in [
            (500, WebhookErrorClass::ServerError, false),
            (503, WebhookErrorClass::ServerError, false),
            (408, WebhookErrorClass::Timeout, false),
            (429, WebhookErrorClass::RateLimited, false),
            (400, WebhookErrorClass::Rejected, true),
            (404, WebhookErrorClass::Rejected, true),
            (410, WebhookErrorClass::Gone, true),
            (301, WebhookErrorClass::Redirect, true),
        ] {
            assert_eq!(WebhookErrorClass::of_status(status), class, "{status}");
            assert_eq!(class.is_permanent(), permanent, "{status}");
        }
    }
}
