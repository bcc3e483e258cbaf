//! Quota alerts as webhooks, signed per the Standard Webhooks specification
//! (<https://www.standardwebhooks.com/>): the payload, the signature, and the HTTP transport.
//!
//! Signing uses `ring` (already linked through rustls) rather than a webhook crate, whose
//! extra dependencies (`http`, `time`, a second base64) would only serve this one function.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use secrecy::ExposeSecret;
use serde::Serialize;

use crate::config::{AlertSettings, ConfigError, SecretBytes, WebhookEndpoint};
use crate::subject::Subject;

mod http;

pub use http::HttpTransport;

/// `type` of an alert below 100 % of its limit.
pub const THRESHOLD_EVENT: &str = "quota.threshold";
/// `type` of an alert at 100 %: the quota is used up.
pub const EXHAUSTED_EVENT: &str = "quota.exhausted";

/// The event type of an alert at `threshold` percent with `used` of `limit`: usage at or past
/// the limit is `quota.exhausted` even when the highest threshold configured is lower, as the
/// email then says "used all of". (webhooks_decide.sql stores the same choice.)
pub fn event_type(
    threshold: i16,
    used: &bigdecimal::BigDecimal,
    limit: &bigdecimal::BigDecimal,
) -> &'static str {
    if threshold >= 100 || used >= limit {
        EXHAUSTED_EVENT
    } else {
        THRESHOLD_EVENT
    }
}

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
/// `{"type": "organization", "id": …, "name": …}`.
#[derive(Debug, Clone, Serialize)]
pub struct SubjectPayload {
    #[serde(rename = "type")]
    pub subject_type: &'static str,
    pub id: i64,
    /// The organization's name; absent for a user, whose payload stays as it always was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `data` of a `quota.threshold` or `quota.exhausted` event.
#[derive(Debug, Clone, Serialize)]
pub struct QuotaEventData {
    pub subject: SubjectPayload,
    pub metric: String,
    pub period: String,
    /// `null`: the limit over all event kinds.
    pub kind: Option<String>,
    pub threshold: i16,
    /// Decimal strings: amounts such as cost are not safe as JSON floats.
    pub used: String,
    pub limit: String,
    pub period_start: String,
    pub period_end: String,
    /// `period_end` in the subject's time zone.
    pub resets_at: String,
    pub timezone: String,
}

/// `data` of a `credit.low`, `credit.depleted` or `credit.recovered` event: the balance of
/// the subject's grants active when it was decided, for one metric, period kind and kind.
#[derive(Debug, Clone, Serialize)]
pub struct CreditEventData {
    pub subject: SubjectPayload,
    pub metric: String,
    pub period: String,
    /// `null`: grants on the limit over all event kinds.
    pub kind: Option<String>,
    /// The newest active grant (`usage_grants.id`): a new grant is what can cross again.
    pub grant_id: i64,
    /// Decimal strings, as for quota events.
    pub granted: String,
    pub used: String,
    pub balance: String,
    /// When the last of the active grants expires, in UTC and in the subject's zone.
    pub expires_at: String,
    pub expires_at_local: String,
    pub timezone: String,
}

#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    #[serde(rename = "type")]
    event_type: &'a str,
    timestamp: String,
    data: &'a T,
}

/// What one alert says, as stored.
pub struct QuotaEventFacts<'a> {
    pub subject: Subject,
    /// The organization's name; ignored for a user.
    pub subject_name: &'a str,
    pub metric: &'a str,
    pub period: &'a str,
    pub kind: &'a str,
    pub threshold: i16,
    pub used: &'a bigdecimal::BigDecimal,
    pub limit: &'a bigdecimal::BigDecimal,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub timezone: &'a str,
    /// When the alert was decided: the event's time, the same on every attempt.
    pub decided_at: DateTime<Utc>,
    /// `quota`, or a credit alert's type; for one, `used` is what the grants gave, `limit`
    /// what they granted and `period_end` when the last expires.
    pub alert: &'a str,
    /// A credit alert's newest active grant.
    pub grant_id: i64,
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The JSON body of an alert's event (a quota event, or a credit event for a credit alert). Built from stored facts only, so every attempt sends
/// the same bytes.
pub fn quota_event_body(facts: &QuotaEventFacts<'_>) -> String {
    let (tz, timezone) = match facts.timezone.parse::<Tz>() {
        Ok(tz) => (tz, facts.timezone.to_string()),
        Err(_) => (Tz::UTC, "UTC".to_string()),
    };
    let subject = SubjectPayload {
        subject_type: facts.subject.kind_name(),
        id: facts.subject.report_key().1,
        name: facts
            .subject
            .org_id()
            .map(|_| facts.subject_name.to_string()),
    };
    let local_end = facts
        .period_end
        .with_timezone(&tz)
        .to_rfc3339_opts(SecondsFormat::Secs, true);
    if facts.alert != "quota" {
        let balance = if facts.used > facts.limit {
            bigdecimal::BigDecimal::from(0)
        } else {
            facts.limit - facts.used
        };
        let data = CreditEventData {
            subject,
            metric: facts.metric.to_string(),
            period: facts.period.to_string(),
            kind: (!facts.kind.is_empty()).then(|| facts.kind.to_string()),
            grant_id: facts.grant_id,
            granted: facts.limit.to_plain_string(),
            used: facts.used.to_plain_string(),
            balance: balance.to_plain_string(),
            expires_at: rfc3339(facts.period_end),
            expires_at_local: local_end,
            timezone,
        };
        return envelope_json(facts.alert, facts.decided_at, &data);
    }
    let data = QuotaEventData {
        subject,
        metric: facts.metric.to_string(),
        period: facts.period.to_string(),
        kind: (!facts.kind.is_empty()).then(|| facts.kind.to_string()),
        threshold: facts.threshold,
        used: facts.used.to_plain_string(),
        limit: facts.limit.to_plain_string(),
        period_start: rfc3339(facts.period_start),
        period_end: rfc3339(facts.period_end),
        resets_at: local_end,
        timezone,
    };
    envelope_json(
        event_type(facts.threshold, facts.used, facts.limit),
        facts.decided_at,
        &data,
    )
}

fn envelope_json<T: Serialize>(event_type: &str, decided_at: DateTime<Utc>, data: &T) -> String {
    let envelope = Envelope {
        event_type,
        timestamp: rfc3339(decided_at),
        data,
    };
    // Serializing plain strings and numbers cannot fail.
    serde_json::to_string(&envelope).unwrap_or_default()
}

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
    fn usage_at_the_limit_is_exhausted_whatever_the_threshold() {
        let big = |s: &str| s.parse::<bigdecimal::BigDecimal>().unwrap();
        assert_eq!(event_type(95, &big("960"), &big("1000")), THRESHOLD_EVENT);
        assert_eq!(event_type(95, &big("1010"), &big("1000")), EXHAUSTED_EVENT);
        assert_eq!(event_type(100, &big("1000"), &big("1000")), EXHAUSTED_EVENT);
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

    #[test]
    fn the_body_carries_decimal_strings_the_subject_and_the_local_reset_time() {
        let used = "1000.50".parse().unwrap();
        let limit = "1000".parse().unwrap();
        let body = quota_event_body(&QuotaEventFacts {
            subject: Subject::User(42),
            subject_name: "",
            metric: "cost",
            period: "month",
            kind: "",
            threshold: 100,
            used: &used,
            limit: &limit,
            period_start: "2026-11-01T00:00:00Z".parse().unwrap(),
            period_end: "2026-12-01T00:00:00Z".parse().unwrap(),
            timezone: "Europe/Berlin",
            decided_at: "2026-11-10T12:00:00Z".parse().unwrap(),
            alert: "quota",
            grant_id: 0,
        });
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["type"], "quota.exhausted");
        assert_eq!(json["timestamp"], "2026-11-10T12:00:00Z");
        assert_eq!(
            json["data"]["subject"],
            serde_json::json!({"type": "user", "id": 42})
        );
        assert_eq!(json["data"]["used"], "1000.50");
        assert_eq!(json["data"]["limit"], "1000");
        assert_eq!(json["data"]["kind"], serde_json::Value::Null);
        assert_eq!(json["data"]["resets_at"], "2026-12-01T01:00:00+01:00");
        assert_eq!(json["data"]["timezone"], "Europe/Berlin");
    }

    #[test]
    fn an_organizations_alert_names_the_organization_as_its_subject() {
        let used = "820".parse().unwrap();
        let limit = "1000".parse().unwrap();
        let body = quota_event_body(&QuotaEventFacts {
            subject: Subject::Org(7),
            subject_name: "Acme \"Labs\"",
            metric: "tokens",
            period: "month",
            kind: "",
            threshold: 80,
            used: &used,
            limit: &limit,
            period_start: "2026-11-01T00:00:00Z".parse().unwrap(),
            period_end: "2026-12-01T00:00:00Z".parse().unwrap(),
            timezone: "UTC",
            decided_at: "2026-11-10T12:00:00Z".parse().unwrap(),
            alert: "quota",
            grant_id: 0,
        });
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            json["data"]["subject"],
            serde_json::json!({"type": "organization", "id": 7, "name": "Acme \"Labs\""})
        );
        assert_eq!(json["type"], "quota.threshold");
    }

    #[test]
    fn a_credit_alert_is_an_event_of_its_own_type_with_the_balance() {
        let used = "420000".parse().unwrap();
        let granted = "500000".parse().unwrap();
        let body = quota_event_body(&QuotaEventFacts {
            subject: Subject::User(42),
            subject_name: "",
            metric: "tokens",
            period: "month",
            kind: "",
            threshold: 20,
            used: &used,
            limit: &granted,
            period_start: "2026-11-10T12:00:00Z".parse().unwrap(),
            period_end: "2027-02-08T12:00:00Z".parse().unwrap(),
            timezone: "Europe/Berlin",
            decided_at: "2026-12-01T08:00:00Z".parse().unwrap(),
            alert: "credit.low",
            grant_id: 9,
        });
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["type"], "credit.low");
        assert_eq!(json["data"]["grant_id"], 9);
        assert_eq!(json["data"]["granted"], "500000");
        assert_eq!(json["data"]["used"], "420000");
        assert_eq!(json["data"]["balance"], "80000");
        assert_eq!(json["data"]["expires_at"], "2027-02-08T12:00:00Z");
        assert_eq!(
            json["data"]["expires_at_local"],
            "2027-02-08T13:00:00+01:00"
        );
        assert!(json["data"].get("threshold").is_none());
    }
}
