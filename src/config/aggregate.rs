//! `[aggregate]`: how much aggregation does per transaction.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, HumanDuration};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggregateSettings {
    /// Most events added to the summary per transaction; a backlog takes several. One
    /// inserting transaction's events are never split, so a batch may exceed this. Larger
    /// batches add more events per second (each summary row is written once per batch, not
    /// once per transaction that touches it); smaller ones keep each transaction short.
    pub batch_events: i64,
    /// A transaction open this long that holds the watermark back (no event committed after it
    /// began can be aggregated until it ends) is logged as a warning, naming it.
    pub stall_warning: HumanDuration,
}

impl Default for AggregateSettings {
    fn default() -> Self {
        AggregateSettings {
            batch_events: 2_000_000,
            stall_warning: HumanDuration(Duration::from_secs(5 * 60)),
        }
    }
}

impl AggregateSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=10_000_000).contains(&self.batch_events) {
            return Err(ConfigError::invalid(
                "aggregate.batch_events",
                format!(
                    "got {}, expected 1 to 10000000 events per transaction",
                    self.batch_events
                ),
            ));
        }
        if self.stall_warning.is_zero() {
            return Err(ConfigError::invalid(
                "aggregate.stall_warning",
                "expected a duration above zero, e.g. \"5m\"",
            ));
        }
        Ok(())
    }
}
