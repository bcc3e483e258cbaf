//! Turns an alert's stored facts into words and units for people: `85,000 tokens`,
//! `1.2 GB`, `$12.34`, and the reset instant in the user's own time zone.

use bigdecimal::{BigDecimal, RoundingMode, ToPrimitive, Zero};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::templates::{AlertContent, single_line};
use crate::format;

/// What the database knows about one alert.
#[derive(Debug, Clone)]
pub struct AlertFacts {
    pub name: String,
    pub timezone: String,
    pub metric: String,
    pub period: String,
    pub kind: String,
    pub threshold: u32,
    pub used: BigDecimal,
    pub limit: BigDecimal,
    pub period_end: DateTime<Utc>,
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
    let (tz, tz_name) = match facts.timezone.parse::<Tz>() {
        Ok(tz) => (tz, facts.timezone.clone()),
        Err(_) => (Tz::UTC, "UTC".to_string()),
    };
    let local = facts.period_end.with_timezone(&tz);
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
        resets_at: {
            let at = local.format("%A %-d %B %Y, %H:%M %Z").to_string();
            // "… 00:00 UTC (UTC)" says the zone twice; name it once when they agree.
            if at.ends_with(&format!(" {tz_name}")) {
                at
            } else {
                format!("{at} ({tz_name})")
            }
        },
        timezone: tz_name,
        upgrade_url: upgrade_url.map(str::to_string),
        preferences_url: preferences_url.map(str::to_string),
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
    fn the_reset_instant_is_shown_in_the_users_time_zone_and_an_unknown_zone_as_utc() {
        let mut facts = AlertFacts {
            name: "Ada".into(),
            timezone: "Asia/Kolkata".into(),
            metric: "tokens".into(),
            period: "day".into(),
            kind: String::new(),
            threshold: 80,
            used: dec("97"),
            limit: dec("100"),
            period_end: "2026-11-23T18:30:00Z".parse().unwrap(),
        };
        let content = alert_content(&facts, None, None);
        assert_eq!(
            content.resets_at,
            "Tuesday 24 November 2026, 00:00 IST (Asia/Kolkata)"
        );
        assert_eq!(content.percent, 97);
        facts.timezone = "Mars/Olympus".into();
        assert_eq!(
            alert_content(&facts, None, None).resets_at,
            "Monday 23 November 2026, 18:30 UTC"
        );
    }
}
