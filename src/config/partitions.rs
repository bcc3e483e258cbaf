//! `[partitions]`: how far ahead monthly partitions of `usage_events` exist.

use serde::{Deserialize, Serialize};

use super::ConfigError;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PartitionSettings {
    pub months_ahead: u32,
}

impl Default for PartitionSettings {
    fn default() -> Self {
        PartitionSettings { months_ahead: 3 }
    }
}

impl PartitionSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.months_ahead > 120 {
            return Err(ConfigError::invalid(
                "partitions.months_ahead",
                "expected 0 to 120",
            ));
        }
        Ok(())
    }
}
