//! `[retention]`: how long each kind of data is kept, and how deletion is paced.

use std::num::NonZeroU32;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::{ConfigError, HumanDuration};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    /// Raw usage events older than this many months are deleted.
    #[serde(deserialize_with = "months")]
    pub events_months: NonZeroU32,
    /// Rows deleted per transaction when trimming.
    pub batch_size: u32,
    /// Longest wait for the brief exclusive lock a partition drop needs.
    pub lock_timeout: HumanDuration,
    /// Months of the daily token summary kept.
    #[serde(deserialize_with = "months")]
    pub token_usage_daily_months: NonZeroU32,
    /// Months of closed quota periods kept.
    #[serde(deserialize_with = "months")]
    pub usage_periods_months: NonZeroU32,
    /// Months of delivered, failed or otherwise finished alerts kept.
    #[serde(deserialize_with = "months")]
    pub quota_alerts_months: NonZeroU32,
    #[serde(deserialize_with = "days")]
    pub job_runs_days: NonZeroU32,
}

// Evaluated at compile time: a zero here fails the build, not the daemon.
const TWO_YEARS_OF_MONTHS: NonZeroU32 = NonZeroU32::new(24).unwrap();
const NINETY_DAYS: NonZeroU32 = NonZeroU32::new(90).unwrap();

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            events_months: TWO_YEARS_OF_MONTHS,
            batch_size: 10_000,
            lock_timeout: HumanDuration(Duration::from_secs(5)),
            token_usage_daily_months: TWO_YEARS_OF_MONTHS,
            usage_periods_months: TWO_YEARS_OF_MONTHS,
            quota_alerts_months: TWO_YEARS_OF_MONTHS,
            job_runs_days: NINETY_DAYS,
        }
    }
}

/// A number of months to keep: 0 would delete everything.
fn months<'de, D: Deserializer<'de>>(deserializer: D) -> Result<NonZeroU32, D::Error> {
    non_zero(
        deserializer,
        "0 would delete everything; expected a number of months, e.g. 24",
    )
}

fn days<'de, D: Deserializer<'de>>(deserializer: D) -> Result<NonZeroU32, D::Error> {
    non_zero(
        deserializer,
        "expected a number of days of run history to keep, e.g. 90",
    )
}

fn non_zero<'de, D: Deserializer<'de>>(
    deserializer: D,
    when_zero: &str,
) -> Result<NonZeroU32, D::Error> {
    NonZeroU32::new(u32::deserialize(deserializer)?)
        .ok_or_else(|| serde::de::Error::custom(when_zero))
}

impl RetentionSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.batch_size == 0 || self.batch_size > 1_000_000 {
            return Err(ConfigError::invalid(
                "retention.batch_size",
                "expected 1 to 1,000,000 rows per transaction (default 10000)",
            ));
        }
        if self.lock_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "retention.lock_timeout",
                "must be longer than 0s; expected e.g. 5s",
            ));
        }
        Ok(())
    }
}
