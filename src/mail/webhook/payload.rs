//! The JSON body of an alert's event: the envelope Standard Webhooks receivers read,
//! `quota.threshold` / `quota.exhausted` for a quota alert, `quota.forecast` for a forecast,
//! `credit.*` for a credit alert.

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::subject::Subject;

/// `type` of an alert below 100 % of its limit.
pub const THRESHOLD_EVENT: &str = "quota.threshold";
/// `type` of an alert at 100 %: the quota is used up.
pub const EXHAUSTED_EVENT: &str = "quota.exhausted";
/// `type` of a forecast: at this pace the limit will be reached within
/// `alerts.forecast_hours`.
pub const FORECAST_EVENT: &str = "quota.forecast";

/// The event type of an alert (`quota_alerts.alert`) at `threshold` percent with `used` of
/// `limit`: a forecast or a credit alert is its own type; a quota alert with usage at or past
/// the limit is `quota.exhausted` even when the highest threshold configured is lower, as the
/// email then says "used all of". (webhooks_decide.sql stores the same choice.)
pub fn event_type<'a>(
    alert: &'a str,
    threshold: i16,
    used: &bigdecimal::BigDecimal,
    limit: &bigdecimal::BigDecimal,
) -> &'a str {
    if alert != "quota" {
        alert
    } else if threshold >= 100 || used >= limit {
        EXHAUSTED_EVENT
    } else {
        THRESHOLD_EVENT
    }
}

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

/// `data` of a `quota.threshold`, `quota.exhausted` or `quota.forecast` event (a forecast's
/// threshold is 100: it is about reaching the limit).
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
    /// When usage reaches the limit at the period's average pace so far, as it was when the
    /// alert was decided, in UTC and in the subject's zone; `null` when not before the period
    /// ends (or already reached at an unknown instant).
    pub projected_exhaustion: Option<String>,
    pub projected_exhaustion_local: Option<String>,
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
    /// A quota alert's or a forecast's projection, as decided.
    pub projected_exhaustion: Option<DateTime<Utc>>,
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
    if facts.alert.starts_with("credit.") {
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
        projected_exhaustion: facts.projected_exhaustion.map(rfc3339),
        projected_exhaustion_local: facts.projected_exhaustion.map(|at| {
            at.with_timezone(&tz)
                .to_rfc3339_opts(SecondsFormat::Secs, true)
        }),
    };
    envelope_json(
        event_type(facts.alert, facts.threshold, facts.used, facts.limit),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_at_the_limit_is_exhausted_whatever_the_threshold() {
        let big = |s: &str| s.parse::<bigdecimal::BigDecimal>().unwrap();
        assert_eq!(
            event_type("quota", 95, &big("960"), &big("1000")),
            THRESHOLD_EVENT
        );
        assert_eq!(
            event_type("quota", 95, &big("1010"), &big("1000")),
            EXHAUSTED_EVENT
        );
        assert_eq!(
            event_type("quota", 100, &big("1000"), &big("1000")),
            EXHAUSTED_EVENT
        );
        // A forecast is about 100 % but not there yet; a credit alert is about grants.
        assert_eq!(
            event_type(FORECAST_EVENT, 100, &big("600"), &big("1000")),
            FORECAST_EVENT
        );
        assert_eq!(
            event_type("credit.low", 20, &big("1"), &big("1000")),
            "credit.low"
        );
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
            projected_exhaustion: None,
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
            projected_exhaustion: Some("2026-11-25T13:00:00Z".parse().unwrap()),
        });
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            json["data"]["subject"],
            serde_json::json!({"type": "organization", "id": 7, "name": "Acme \"Labs\""})
        );
        assert_eq!(json["type"], "quota.threshold");
        assert_eq!(json["data"]["projected_exhaustion"], "2026-11-25T13:00:00Z");
    }

    #[test]
    fn a_forecast_is_its_own_event_with_the_projection_in_utc_and_in_the_subjects_zone() {
        let used = "400".parse().unwrap();
        let limit = "1000".parse().unwrap();
        let body = quota_event_body(&QuotaEventFacts {
            subject: Subject::User(42),
            subject_name: "",
            metric: "tokens",
            period: "month",
            kind: "",
            threshold: 100,
            used: &used,
            limit: &limit,
            period_start: "2026-11-30T23:00:00Z".parse().unwrap(),
            period_end: "2026-12-31T23:00:00Z".parse().unwrap(),
            timezone: "Europe/Berlin",
            decided_at: "2026-12-07T12:00:00Z".parse().unwrap(),
            alert: FORECAST_EVENT,
            grant_id: 0,
            projected_exhaustion: Some("2026-12-19T13:00:00Z".parse().unwrap()),
        });
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["type"], "quota.forecast");
        assert_eq!(json["data"]["threshold"], 100);
        assert_eq!(json["data"]["projected_exhaustion"], "2026-12-19T13:00:00Z");
        assert_eq!(
            json["data"]["projected_exhaustion_local"],
            "2026-12-19T14:00:00+01:00"
        );
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
            projected_exhaustion: None,
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
