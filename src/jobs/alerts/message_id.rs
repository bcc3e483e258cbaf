//! The Message-ID of an alert: derived from the alert's unique key alone (its organization
//! included), so every attempt to send one alert carries the same ID (a resend after a crash
//! is recognisable as the same message), and injective, so no two alerts ever share one.

use std::borrow::Cow;
use std::fmt::Write as _;

use chrono::{DateTime, Timelike, Utc};

/// The unique key of one alert (`quota_alerts_once`).
#[derive(Debug, Clone, Copy)]
pub struct AlertKey<'a> {
    /// The recipient.
    pub user_id: i64,
    /// The organization whose quota it is; 0 for the recipient's personal quota.
    pub org_id: i64,
    pub metric: &'a str,
    pub period: &'a str,
    pub kind: &'a str,
    pub period_start: DateTime<Utc>,
    pub threshold: i16,
    /// `quota`, or a credit alert: `credit.low`, `credit.depleted`, `credit.recovered`.
    pub alert: &'a str,
    /// A credit alert's newest active grant; 0 for a quota alert.
    pub grant_id: i64,
}

/// A personal alert: `quota-alert.<user>.<metric>.<period>.<kind>.<period start>.<threshold>@<domain>`,
/// as it has always been. An organization's: `org-quota-alert.<org>.<user>.…` with the same
/// parts after, so an alert to an owner about the organization never shares an ID with one
/// about their own quota. No part contains a `.`, and each part is written injectively, so
/// distinct keys give distinct IDs.
///
/// A credit alert: `credit-alert.<user>.<metric>.<period>.<kind>.<low|depleted|recovered>.<grant>@<domain>`
/// (`org-credit-alert.<org>.…` for an organization's), its own prefix, so it never meets a
/// quota alert's ID.
///
/// A forecast (once per period): `quota-forecast.<user>.<metric>.<period>.<kind>.<period start>@<domain>`
/// (`org-quota-forecast.<org>.…`).
pub fn alert_message_id(key: &AlertKey<'_>, domain: &str) -> String {
    if key.alert == "quota.forecast" {
        let rest = format!(
            "{}.{}.{}.{}.{}",
            key.user_id,
            name_part(key.metric),
            name_part(key.period),
            kind_part(key.kind),
            instant_part(key.period_start),
        );
        return match key.org_id {
            0 => format!("quota-forecast.{rest}@{domain}"),
            org => format!("org-quota-forecast.{org}.{rest}@{domain}"),
        };
    }
    if key.alert != "quota" {
        let rest = format!(
            "{}.{}.{}.{}.{}.{}",
            key.user_id,
            name_part(key.metric),
            name_part(key.period),
            kind_part(key.kind),
            name_part(key.alert.strip_prefix("credit.").unwrap_or(key.alert)),
            key.grant_id
        );
        return match key.org_id {
            0 => format!("credit-alert.{rest}@{domain}"),
            org => format!("org-credit-alert.{org}.{rest}@{domain}"),
        };
    }
    let rest = format!(
        "{}.{}.{}.{}.{}.{}",
        key.user_id,
        name_part(key.metric),
        name_part(key.period),
        kind_part(key.kind),
        instant_part(key.period_start),
        key.threshold
    );
    match key.org_id {
        0 => format!("quota-alert.{rest}@{domain}"),
        org => format!("org-quota-alert.{org}.{rest}@{domain}"),
    }
}

/// The limit over every kind (`''`) has always been written `all`, so the IDs of alerts
/// already sent or still in flight stay what they were; an event kind literally named `all`
/// is escaped like any other text that is not a plain name, so the two never meet.
fn kind_part(kind: &str) -> Cow<'_, str> {
    match kind {
        "" => Cow::Borrowed("all"),
        "all" => Cow::Owned(escaped(kind)),
        _ => name_part(kind),
    }
}

/// A plain name (`[a-z0-9_]+`: every metric, period and event kind the schema allows) as it
/// is; anything else as `x-` and its bytes in hex, which no plain name can look like.
fn name_part(text: &str) -> Cow<'_, str> {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if plain {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(escaped(text))
    }
}

fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(2 + 2 * text.len());
    out.push_str("x-");
    for byte in text.bytes() {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// `20261101T000000Z`; a start that is not on a whole second (a manual reset) carries its
/// fraction, `20261101T093012_123456000Z`, so two starts within one second differ.
fn instant_part(instant: DateTime<Utc>) -> String {
    let seconds = instant.format("%Y%m%dT%H%M%S");
    match instant.nanosecond() {
        0 => format!("{seconds}Z"),
        nanos => format!("{seconds}_{nanos:09}Z"),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;

    fn sample(org_id: i64, kind: &str) -> AlertKey<'_> {
        AlertKey {
            user_id: 7,
            org_id,
            metric: "tokens",
            period: "month",
            kind,
            period_start: Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(),
            threshold: 80,
            alert: "quota",
            grant_id: 0,
        }
    }

    #[test]
    fn a_credit_alert_has_an_id_of_its_own_per_grant() {
        let low = AlertKey {
            alert: "credit.low",
            grant_id: 5,
            ..sample(0, "")
        };
        assert_eq!(
            alert_message_id(&low, "example.com"),
            "credit-alert.7.tokens.month.all.low.5@example.com"
        );
        let later = AlertKey { grant_id: 6, ..low };
        assert_ne!(
            alert_message_id(&low, "example.com"),
            alert_message_id(&later, "example.com")
        );
        let org = AlertKey {
            alert: "credit.depleted",
            ..sample(12, "")
        };
        assert_eq!(
            alert_message_id(&org, "example.com"),
            "org-credit-alert.12.7.tokens.month.all.depleted.0@example.com"
        );
    }

    #[test]
    fn a_forecast_has_an_id_of_its_own_per_period() {
        let forecast = AlertKey {
            alert: "quota.forecast",
            threshold: 100,
            ..sample(0, "")
        };
        assert_eq!(
            alert_message_id(&forecast, "example.com"),
            "quota-forecast.7.tokens.month.all.20261101T000000Z@example.com"
        );
        let org = AlertKey {
            alert: "quota.forecast",
            threshold: 100,
            ..sample(12, "image_generation")
        };
        assert_eq!(
            alert_message_id(&org, "example.com"),
            "org-quota-forecast.12.7.tokens.month.image_generation.20261101T000000Z@example.com"
        );
    }

    fn id(kind: &str) -> String {
        alert_message_id(&sample(0, kind), "example.com")
    }

    #[test]
    fn the_limit_over_every_kind_keeps_its_id_and_differs_from_the_kind_named_all() {
        assert_eq!(
            id(""),
            "quota-alert.7.tokens.month.all.20261101T000000Z.80@example.com"
        );
        assert_eq!(
            id("image_generation"),
            "quota-alert.7.tokens.month.image_generation.20261101T000000Z.80@example.com"
        );
        assert_ne!(id(""), id("all"));
        assert_eq!(
            id("all"),
            "quota-alert.7.tokens.month.x-616c6c.20261101T000000Z.80@example.com"
        );
    }

    #[test]
    fn an_organizations_alert_names_the_organization_and_the_recipient() {
        assert_eq!(
            alert_message_id(&sample(12, ""), "example.com"),
            "org-quota-alert.12.7.tokens.month.all.20261101T000000Z.80@example.com"
        );
    }

    type Key = (i64, i64, String, String, String, DateTime<Utc>, i16);

    /// Keys drawn from small, collision-prone pools: empty and look-alike names, dots, the
    /// escape prefix itself, starts a fraction of a second apart.
    fn key() -> impl Strategy<Value = Key> {
        let text = || {
            prop_oneof![
                Just(String::new()),
                Just("all".to_string()),
                Just("x-616c6c".to_string()),
                Just("a.b".to_string()),
                "[a-z_.x-]{0,4}",
            ]
        };
        let start = (0i64..3, prop_oneof![Just(0u32), 0u32..3, Just(999_999_999)]).prop_map(
            |(second, nanos)| {
                Utc.timestamp_opt(1_793_491_200 + second, nanos)
                    .single()
                    .unwrap_or_default()
            },
        );
        (-2i64..3, 0i64..3, text(), text(), text(), start, 79i16..82)
    }

    fn key_id(key: &Key) -> String {
        let (user_id, org_id, metric, period, kind, period_start, threshold) = key;
        alert_message_id(
            &AlertKey {
                user_id: *user_id,
                org_id: *org_id,
                metric,
                period,
                kind,
                period_start: *period_start,
                threshold: *threshold,
                alert: "quota",
                grant_id: 0,
            },
            "example.com",
        )
    }

    proptest! {
        #[test]
        fn distinct_alert_keys_give_distinct_message_ids(a in key(), b in key()) {
            prop_assert_eq!(a == b, key_id(&a) == key_id(&b), "{:?} {:?}", a, b);
        }
    }
}
