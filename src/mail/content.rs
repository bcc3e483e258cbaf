//! Turns an alert's stored facts into words and units for people: `85,000 tokens`,
//! `1.2 GB`, `$12.34`, and the reset instant in the zone the period was counted in.

use bigdecimal::{BigDecimal, RoundingMode, ToPrimitive, Zero};
use chrono::{DateTime, FixedOffset};

use super::templates::{
    AlertContent, CreditContent, MemberUsage, OrganizationContent, single_line,
};
use crate::format;

/// What the database knows about one alert.
#[derive(Debug, Clone)]
pub struct AlertFacts {
    pub name: String,
    /// The zone PostgreSQL counted the period in (`usage_timezone_or_utc(users.timezone)`).
    pub zone: String,
    pub metric: String,
    pub period: String,
    pub kind: String,
    pub threshold: u32,
    pub used: BigDecimal,
    pub limit: BigDecimal,
    /// The period's end on the user's clock, at the offset PostgreSQL gives `zone` then.
    pub period_end: DateTime<FixedOffset>,
    /// When usage reaches the limit at the period's pace, as decided, on the same clock;
    /// `None` when not before the period ends.
    pub projected: Option<DateTime<FixedOffset>>,
}

pub fn alert_content(
    facts: &AlertFacts,
    upgrade_url: Option<&str>,
    preferences_url: Option<&str>,
) -> AlertContent {
    let percent = if facts.limit.is_zero() {
        100
    } else {
        (&facts.used * BigDecimal::from(100) / &facts.limit)
            .with_scale_round(0, RoundingMode::Down)
            .to_u64()
            .unwrap_or(0)
    };
    let remaining = if facts.used > facts.limit {
        BigDecimal::zero()
    } else {
        &facts.limit - &facts.used
    };
    AlertContent {
        name: single_line(&facts.name),
        threshold: facts.threshold,
        percent,
        metric: facts.metric.clone(),
        metric_noun: metric_noun(&facts.metric).into(),
        period: facts.period.clone(),
        period_adjective: if facts.period == "day" {
            "daily"
        } else {
            "monthly"
        }
        .into(),
        kind: facts.kind.clone(),
        kind_label: facts.kind.replace('_', " "),
        used: format_amount(&facts.metric, &facts.used),
        limit: format_amount(&facts.metric, &facts.limit),
        remaining: format_amount(&facts.metric, &remaining),
        resets_at: instant_in_zone(&facts.zone, &facts.period_end),
        timezone: facts.zone.clone(),
        // Only a limit not reached yet has a day ahead to name.
        projected_on: facts
            .projected
            .filter(|_| facts.used < facts.limit)
            .map(|at| at.format("%A %-d %B").to_string()),
        projected_at: facts
            .projected
            .filter(|_| facts.used < facts.limit)
            .map(|at| instant_in_zone(&facts.zone, &at)),
        upgrade_url: upgrade_url.map(str::to_string),
        preferences_url: preferences_url.map(str::to_string),
        organization: None,
        credit: None,
        forecast: false,
    }
}

/// `Tuesday 1 December 2026, 00:00 CET (Europe/Berlin)`: an instant on the clock of `zone`.
fn instant_in_zone(zone: &str, at: &DateTime<FixedOffset>) -> String {
    let abbreviation = format::zone_abbreviation(zone, at);
    let text = at.format("%A %-d %B %Y, %H:%M");
    // "… 00:00 UTC (UTC)" says the zone twice; name it once when they agree.
    if abbreviation == zone {
        format!("{text} {abbreviation}")
    } else {
        format!("{text} {abbreviation} ({zone})")
    }
}

/// The credit part of a credit alert (`alert`: `credit.low`, `credit.depleted` or
/// `credit.recovered`), from its facts as the outbox stores them: `used` what the active
/// grants gave, `limit` what they granted, `period_end` when the last of them expires.
pub fn credit_content(facts: &AlertFacts, alert: &str, low_percent: u32) -> CreditContent {
    let balance = if facts.used > facts.limit {
        BigDecimal::zero()
    } else {
        &facts.limit - &facts.used
    };
    let percent_left = if facts.limit.is_zero() {
        0
    } else {
        (&balance * BigDecimal::from(100) / &facts.limit)
            .with_scale_round(0, RoundingMode::Down)
            .to_u64()
            .unwrap_or(0)
    };
    CreditContent {
        event: alert.to_string(),
        state: alert.strip_prefix("credit.").unwrap_or(alert).to_string(),
        granted: format_amount(&facts.metric, &facts.limit),
        used: format_amount(&facts.metric, &facts.used),
        balance: format_amount(&facts.metric, &balance),
        percent_left,
        low_percent,
        expires_at: instant_in_zone(&facts.zone, &facts.period_end),
    }
}

/// What the database knows about the organization of one alert on its quota.
#[derive(Debug, Clone)]
pub struct OrganizationFacts {
    pub id: i64,
    pub name: String,
    /// The recipient's role in it now (`owner` or `admin`), or empty when unknown.
    pub role: String,
    /// The recipient's user id.
    pub recipient: i64,
    /// Its largest users of the alert's metric in the period, largest first.
    pub top_members: Vec<MemberFacts>,
}

#[derive(Debug, Clone)]
pub struct MemberFacts {
    pub user_id: i64,
    pub name: String,
    pub used: BigDecimal,
}

/// The organization part of an alert email on `metric`.
pub fn organization_content(org: &OrganizationFacts, metric: &str) -> OrganizationContent {
    let or_id = |name: &str, noun: &str, id: i64| {
        let name = single_line(name);
        if name.is_empty() {
            format!("{noun} {id}")
        } else {
            name
        }
    };
    OrganizationContent {
        id: org.id,
        name: or_id(&org.name, "organization", org.id),
        role: match org.role.as_str() {
            "" => "owner or admin".to_string(),
            role => role.to_string(),
        },
        top_members: org
            .top_members
            .iter()
            .map(|m| MemberUsage {
                name: or_id(&m.name, "user", m.user_id),
                used: format_amount(metric, &m.used),
                you: m.user_id == org.recipient,
            })
            .collect(),
    }
}

fn metric_noun(metric: &str) -> &'static str {
    match metric {
        "requests" => "request",
        "messages" => "message",
        "tokens" => "token",
        "bytes" => "storage",
        "cost" => "spending",
        _ => "usage",
    }
}

/// An amount of `metric` with its unit.
pub fn format_amount(metric: &str, value: &BigDecimal) -> String {
    match metric {
        "bytes" => {
            let bytes = value.to_f64().unwrap_or(0.0);
            const MB: f64 = 1024.0 * 1024.0;
            const GB: f64 = MB * 1024.0;
            if bytes >= GB {
                format!("{:.1} GB", bytes / GB)
            } else {
                format!("{:.1} MB", bytes / MB)
            }
        }
        "cost" => format!("${}", format::money(value)),
        _ => {
            let whole = format::whole(value);
            let unit = match metric {
                "requests" => "requests",
                "messages" => "messages",
                "tokens" => "tokens",
                _ => "",
            };
            let unit = if whole == "1" {
                unit.trim_end_matches('s')
            } else {
                unit
            };
            format!("{whole} {unit}").trim_end().to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::tests::dec;

    #[test]
    fn an_organization_without_names_is_named_by_ids_and_the_recipient_is_you() {
        let member = |user_id, name: &str, used| MemberFacts {
            user_id,
            name: name.into(),
            used: dec(used),
        };
        let org = OrganizationFacts {
            id: 7,
            name: " \r\n".into(),
            role: "admin".into(),
            recipient: 3,
            top_members: vec![member(5, "", "1200"), member(3, "Cy", "800")],
        };
        let content = organization_content(&org, "tokens");
        assert_eq!(content.name, "organization 7");
        assert_eq!(content.role, "admin");
        assert_eq!(
            content.top_members,
            vec![
                MemberUsage {
                    name: "user 5".into(),
                    used: "1,200 tokens".into(),
                    you: false
                },
                MemberUsage {
                    name: "Cy".into(),
                    used: "800 tokens".into(),
                    you: true
                },
            ]
        );
    }

    #[test]
    fn a_projection_is_named_by_its_day_on_the_subjects_clock_until_the_limit_is_reached() {
        let mut facts = AlertFacts {
            name: "Ada".into(),
            zone: "Europe/Berlin".into(),
            metric: "tokens".into(),
            period: "month".into(),
            kind: String::new(),
            threshold: 80,
            used: dec("800"),
            limit: dec("1000"),
            period_end: format::local_time("2026-12-31T23:00:00Z".parse().unwrap(), 3_600),
            // 23:30 UTC on the 18th is already the 19th in Berlin.
            projected: Some(format::local_time(
                "2026-12-18T23:30:00Z".parse().unwrap(),
                3_600,
            )),
        };
        let content = alert_content(&facts, None, None);
        assert_eq!(
            content.projected_on.as_deref(),
            Some("Saturday 19 December")
        );
        assert_eq!(
            content.projected_at.as_deref(),
            Some("Saturday 19 December 2026, 00:30 CET (Europe/Berlin)")
        );
        facts.used = dec("1000");
        assert_eq!(alert_content(&facts, None, None).projected_on, None);
    }

    #[test]
    fn amounts_carry_their_units() {
        assert_eq!(format_amount("tokens", &dec("1234567")), "1,234,567 tokens");
        assert_eq!(format_amount("messages", &dec("80")), "80 messages");
        assert_eq!(format_amount("requests", &dec("1")), "1 request");
        assert_eq!(format_amount("cost", &dec("1234.5")), "$1,234.50");
        assert_eq!(format_amount("cost", &dec("0.004")), "$0.00");
        assert_eq!(format_amount("cost", &dec("12.345")), "$12.35");
        assert_eq!(format_amount("bytes", &dec("104857600")), "100.0 MB");
        assert_eq!(format_amount("bytes", &dec("1288490189")), "1.2 GB");
    }

    #[test]
    fn the_reset_instant_is_shown_in_the_zone_the_period_was_counted_in() {
        let end = "2026-11-23T18:30:00Z".parse().unwrap();
        let mut facts = AlertFacts {
            name: "Ada".into(),
            zone: "Asia/Kolkata".into(),
            metric: "tokens".into(),
            period: "day".into(),
            kind: String::new(),
            threshold: 80,
            used: dec("97"),
            limit: dec("100"),
            period_end: format::local_time(end, 19_800),
            projected: None,
        };
        let content = alert_content(&facts, None, None);
        assert_eq!(
            content.resets_at,
            "Tuesday 24 November 2026, 00:00 IST (Asia/Kolkata)"
        );
        assert_eq!(content.percent, 97);
        // An unknown zone is counted in UTC: usage_timezone_or_utc says `UTC`.
        facts.zone = "UTC".into();
        facts.period_end = format::local_time(end, 0);
        assert_eq!(
            alert_content(&facts, None, None).resets_at,
            "Monday 23 November 2026, 18:30 UTC"
        );
        facts.zone = "UTC+3".into();
        facts.period_end = format::local_time(end, -3 * 3600);
        assert_eq!(
            alert_content(&facts, None, None).resets_at,
            "Monday 23 November 2026, 15:30 UTC-03:00 (UTC+3)"
        );
    }
}
