//! Cron schedules, always evaluated in UTC.
//!
//! Both the standard 5-field crontab form and the 6-field form with seconds are accepted;
//! internally everything is the 6-field form that tokio-cron-scheduler expects.

use chrono::{DateTime, Duration, DurationRound, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};

#[derive(Debug, Clone)]
pub struct Schedule {
    source: String,
    six_field: String,
    cron: Cron,
}

impl Schedule {
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let source = text.trim().to_string();
        let fields: Vec<&str> = source.split_whitespace().collect();
        let six_field = match fields.len() {
            5 => format!("0 {}", fields.join(" ")),
            6 => fields.join(" "),
            n => {
                return Err(format!(
                    "`{source}` has {n} fields; expected a cron string of 5 fields \
                     (minute hour day-of-month month day-of-week, e.g. `*/15 * * * *`) \
                     or 6 with seconds first, or an empty string to disable the job"
                ));
            }
        };
        let day_of_month = fields[fields.len() - 3];
        let day_of_week = fields[fields.len() - 1];
        if day_of_month != "*" && day_of_week != "*" && day_of_week != "?" {
            return Err(format!(
                "`{source}` restricts both day-of-month and day-of-week, which cron \
                 implementations read differently; restrict only one of them"
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(&six_field)
            .map_err(|e| {
                format!("`{source}` is not a valid cron string ({e}); expected e.g. `*/15 * * * *`")
            })?;
        Ok(Schedule {
            source,
            six_field,
            cron,
        })
    }

    /// The string as written in the configuration.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The 6-field form (seconds first).
    pub fn six_field(&self) -> &str {
        &self.six_field
    }

    /// The first tick strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&after, false).ok()
    }

    /// The latest tick at or before `at` (whole seconds).
    pub fn latest_at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let at = at.duration_trunc(Duration::seconds(1)).unwrap_or(at);
        self.cron.find_previous_occurrence(&at, true).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, m: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, mi, s).single().unwrap()
    }

    #[test]
    fn five_field_form_runs_on_the_minute() {
        let s = Schedule::parse("*/15 * * * *").unwrap();
        assert_eq!(s.six_field(), "0 */15 * * * *");
        assert_eq!(
            s.next_after(utc(2026, 1, 1, 10, 7, 30)),
            Some(utc(2026, 1, 1, 10, 15, 0))
        );
    }

    #[test]
    fn six_field_form_keeps_seconds() {
        let s = Schedule::parse("*/5 * * * * *").unwrap();
        assert_eq!(
            s.next_after(utc(2026, 1, 1, 10, 0, 1)),
            Some(utc(2026, 1, 1, 10, 0, 5))
        );
    }

    #[test]
    fn latest_tick_includes_the_instant_itself() {
        let s = Schedule::parse("30 3 1 * *").unwrap();
        assert_eq!(
            s.latest_at_or_before(utc(2026, 3, 1, 3, 30, 0)),
            Some(utc(2026, 3, 1, 3, 30, 0))
        );
        assert_eq!(
            s.latest_at_or_before(utc(2026, 3, 1, 3, 29, 59)),
            Some(utc(2026, 2, 1, 3, 30, 0))
        );
    }

    #[test]
    fn malformed_strings_are_rejected_with_the_expected_form() {
        for bad in ["* * *", "61 * * * *", "every minute please", "0 0 1 * MON"] {
            let err = Schedule::parse(bad).unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
    }
}
