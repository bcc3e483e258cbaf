//! Numbers and instants written for people: whole amounts with thousands separators
//! (`1,234,567`), money with two decimals rounded half up (`12.35`), and a user's local time
//! with its zone named (`CET`, `UTC-03:00`). The usage table and the alert email both write
//! through here, so one amount or reset instant never reads two ways. Machine output (the
//! CSV export, JSON) keeps exact, ungrouped digits and does not come here.

use bigdecimal::{BigDecimal, RoundingMode};
use chrono::{DateTime, FixedOffset, Offset, Utc};
use chrono_tz::{TZ_VARIANTS, Tz};

/// A whole amount (fractions cut off, as a counter shows them), grouped by thousands: `71,234`.
pub fn whole(value: &BigDecimal) -> String {
    group_thousands(&value.with_scale_round(0, RoundingMode::Down).to_string())
}

/// Money in cents, rounded half up (the rounding people check a bill with), grouped by
/// thousands and without a currency sign: `1,234.50`.
pub fn money(value: &BigDecimal) -> String {
    let text = value.with_scale_round(2, RoundingMode::HalfUp).to_string();
    let (units, cents) = text.split_once('.').unwrap_or((&text, "00"));
    format!("{}.{cents:0<2}", group_thousands(units))
}

/// `-1234567` → `-1,234,567`; `digits` is an optional sign and decimal digits.
fn group_thousands(digits: &str) -> String {
    let (sign, digits) = digits
        .strip_prefix('-')
        .map_or(("", digits), |rest| ("-", rest));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    out.push_str(sign);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `instant` on a clock `utc_offset_seconds` east of UTC: the offset PostgreSQL computed for
/// the user's zone at that instant, so the time shown is the one the periods were counted in,
/// for every zone name PostgreSQL accepts. An offset no clock has (a day or more) shows UTC.
pub fn local_time(instant: DateTime<Utc>, utc_offset_seconds: i32) -> DateTime<FixedOffset> {
    let offset = FixedOffset::east_opt(utc_offset_seconds).unwrap_or(Utc.fix());
    instant.with_timezone(&offset)
}

/// The name of `local`'s zone for people: the tz database abbreviation (`CET`, `IST`) when
/// chrono-tz knows `zone` (in any letter case, as PostgreSQL accepts it) and agrees on the
/// offset at that instant; else the offset itself (`UTC-03:00`), e.g. for a POSIX zone such
/// as `UTC+3`, which PostgreSQL reads as three hours west of UTC.
pub fn zone_abbreviation(zone: &str, local: &DateTime<FixedOffset>) -> String {
    let known = zone.parse::<Tz>().ok().or_else(|| {
        TZ_VARIANTS
            .iter()
            .copied()
            .find(|tz| tz.name().eq_ignore_ascii_case(zone))
    });
    if let Some(tz) = known {
        let there = local.with_timezone(&tz);
        if there.offset().fix() == *local.offset() {
            return there.format("%Z").to_string();
        }
    }
    match local.offset().local_minus_utc() {
        0 => "UTC".to_string(),
        _ => format!("UTC{}", local.format("%:z")),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::str::FromStr;

    use super::*;

    /// A decimal from its text, for the tests of everything that formats amounts.
    pub(crate) fn dec(text: &str) -> BigDecimal {
        BigDecimal::from_str(text).unwrap()
    }

    #[test]
    fn money_rounds_half_up_to_cents_and_groups_thousands() {
        for (amount, text) in [
            ("12.345", "12.35"),
            ("0.005", "0.01"),
            ("0.004", "0.00"),
            ("1234567.891", "1,234,567.89"),
            ("1234.5", "1,234.50"),
            ("7", "7.00"),
        ] {
            assert_eq!(money(&dec(amount)), text, "{amount}");
        }
    }

    #[test]
    fn whole_amounts_are_cut_to_units_and_grouped_by_thousands() {
        for (amount, text) in [
            ("1234567", "1,234,567"),
            ("999.9", "999"),
            ("100", "100"),
            ("1000000", "1,000,000"),
            ("-1234", "-1,234"),
        ] {
            assert_eq!(whole(&dec(amount)), text, "{amount}");
        }
    }

    #[test]
    fn a_local_time_is_named_by_its_abbreviation_or_else_by_its_offset() {
        let end: DateTime<Utc> = "2026-11-30T23:00:00Z".parse().unwrap();
        let berlin = local_time(end, 3600);
        assert_eq!(berlin.to_rfc3339(), "2026-12-01T00:00:00+01:00");
        assert_eq!(zone_abbreviation("Europe/Berlin", &berlin), "CET");
        assert_eq!(zone_abbreviation("europe/berlin", &berlin), "CET");
        let posix = local_time("2026-12-01T03:00:00Z".parse().unwrap(), -3 * 3600);
        assert_eq!(zone_abbreviation("UTC+3", &posix), "UTC-03:00");
        assert_eq!(zone_abbreviation("UTC", &local_time(end, 0)), "UTC");
        // A zone chrono-tz knows but whose offset differs (another tz database version):
        // PostgreSQL's offset wins and is named as such.
        assert_eq!(
            zone_abbreviation("Europe/Berlin", &local_time(end, 7200)),
            "UTC+02:00"
        );
        assert_eq!(
            local_time(end, 90_000).to_rfc3339(),
            "2026-11-30T23:00:00+00:00"
        );
    }
}
