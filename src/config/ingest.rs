//! `[ingest]`: what the database needs to know about how applications record usage.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The range `usage_settings_idempotency_days_check` allows.
const IDEMPOTENCY_DAYS: std::ops::RangeInclusive<u16> = 1..=3650;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSettings {
    /// Days a `usage_record()` idempotency key is remembered: a retry with the same key
    /// within them records nothing. Written into `usage_settings` at start and by
    /// `--migrate`; `retention` deletes older keys.
    pub idempotency_days: u16,
}

impl Default for IngestSettings {
    fn default() -> Self {
        IngestSettings {
            idempotency_days: 7,
        }
    }
}

impl IngestSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !IDEMPOTENCY_DAYS.contains(&self.idempotency_days) {
            return Err(ConfigError::invalid(
                "ingest.idempotency_days",
                format!(
                    "got {}, expected 1 to 3650 days (default 7): how long a retried \
                     usage_record() with the same key is recognised",
                    self.idempotency_days
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_days(idempotency_days: u16) -> IngestSettings {
        IngestSettings { idempotency_days }
    }

    #[test]
    fn the_default_window_is_a_week() {
        assert_eq!(IngestSettings::default().idempotency_days, 7);
        assert!(IngestSettings::default().validate().is_ok());
    }

    #[test]
    fn one_day_to_ten_years_is_accepted() {
        for days in [1, 7, 365, 3650] {
            assert!(with_days(days).validate().is_ok(), "{days}");
        }
    }

    #[test]
    fn zero_or_past_ten_years_is_refused_naming_the_key() {
        for days in [0, 3651, u16::MAX] {
            match with_days(days).validate() {
                Err(ConfigError::Invalid { key, message }) => {
                    assert_eq!(key, "ingest.idempotency_days");
                    assert!(message.contains(&format!("got {days}")), "{message}");
                }
                other => panic!("{days}: expected a refused key, got {other:?}"),
            }
        }
    }
}
