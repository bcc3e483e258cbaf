//! `[alerts]`: which percentages of a limit trigger an alert, where alerts go (email,
//! webhooks) and how deliveries are retried.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::webhooks::{self, AlertChannel, WebhookEndpoint};
use super::{ConfigError, HumanDuration};

/// A percentage of a limit, 1 to 100; 100 means "used up".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Percent(u8);

impl Percent {
    pub fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<u32> for Percent {
    type Error = String;

    fn try_from(value: u32) -> Result<Self, Self::Error> {
        match u8::try_from(value) {
            Ok(p) if (1..=100).contains(&p) => Ok(Percent(p)),
            _ => Err(format!(
                "{value} is out of range; expected percentages from 1 to 100"
            )),
        }
    }
}

impl From<Percent> for u32 {
    fn from(percent: Percent) -> u32 {
        u32::from(percent.0)
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The longest forecast lead time: a year and a day.
const MAX_FORECAST_HOURS: u32 = 8_808;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertSettings {
    /// Percentages of a limit that trigger an email, once each per period.
    pub thresholds: Vec<Percent>,
    /// A grant's balance below this percentage of what was granted is `credit.low`.
    pub credit_low_percent: Percent,
    /// Forecast alerts (`quota.forecast`), off when unset: once per subject, metric and
    /// period, when at the period's pace so far the limit will be reached within this many
    /// hours (and before the period ends).
    pub forecast_hours: Option<u32>,
    /// Deliveries tried before an alert is `failed`.
    pub max_attempts: u32,
    /// An alert not delivered this long after its period ended is `expired`.
    pub expire_after: HumanDuration,
    /// First retry delay; doubled after every failed attempt up to `backoff_max`.
    pub backoff_base: HumanDuration,
    pub backoff_max: HumanDuration,
    /// How long a claimed (`sending`) alert is reserved before another run may retry it.
    pub lease: HumanDuration,
    /// Alerts claimed per batch.
    pub batch_size: u32,
    /// Where alerts go; unset: `email`, plus `webhook` when an endpoint is configured.
    pub channels: Option<Vec<AlertChannel>>,
    /// Endpoints that receive every alert as a signed request (`[[alerts.webhooks]]`).
    pub webhooks: Vec<WebhookEndpoint>,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            thresholds: vec![Percent(80), Percent(95)],
            credit_low_percent: Percent(20),
            forecast_hours: None,
            max_attempts: 8,
            expire_after: HumanDuration(Duration::from_secs(24 * 3_600)),
            backoff_base: HumanDuration(Duration::from_secs(60)),
            backoff_max: HumanDuration(Duration::from_secs(3_600)),
            lease: HumanDuration(Duration::from_secs(15 * 60)),
            batch_size: 200,
            channels: None,
            webhooks: Vec::new(),
        }
    }
}

impl AlertSettings {
    /// Whether alerts go out through `channel` (see [`AlertSettings::channels`]).
    pub fn uses(&self, channel: AlertChannel) -> bool {
        match &self.channels {
            Some(channels) => channels.contains(&channel),
            None => channel == AlertChannel::Email || !self.webhooks.is_empty(),
        }
    }

    /// `forecast_hours` in seconds, or `None` when forecasts are off.
    pub fn forecast_seconds(&self) -> Option<f64> {
        self.forecast_hours.map(|h| f64::from(h) * 3_600.0)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.validate_thresholds()?;
        if let Some(hours) = self.forecast_hours
            && !(1..=MAX_FORECAST_HOURS).contains(&hours)
        {
            return Err(ConfigError::invalid(
                "alerts.forecast_hours",
                format!(
                    "{hours} is out of range; expected 1 to {MAX_FORECAST_HOURS} hours (e.g. 72: warn three days before a limit is reached), or leave it unset for no forecasts"
                ),
            ));
        }
        if self.credit_low_percent.get() >= 100 {
            return Err(ConfigError::invalid(
                "alerts.credit_low_percent",
                "100 is out of range; expected a percentage from 1 to 99 (20: below a fifth of what was granted)",
            ));
        }
        webhooks::validate(&self.webhooks, self.channels.as_deref())?;
        if self.max_attempts == 0 || self.max_attempts > 100 {
            return Err(ConfigError::invalid(
                "alerts.max_attempts",
                format!("{} is out of range; expected 1 to 100", self.max_attempts),
            ));
        }
        for (key, value) in [
            ("alerts.expire_after", self.expire_after),
            ("alerts.backoff_base", self.backoff_base),
            ("alerts.lease", self.lease),
        ] {
            if value.is_zero() {
                return Err(ConfigError::invalid(
                    key,
                    "must be longer than 0s; expected e.g. 10m",
                ));
            }
        }
        if self.backoff_max.0 < self.backoff_base.0 {
            return Err(ConfigError::invalid(
                "alerts.backoff_max",
                format!(
                    "{} is shorter than alerts.backoff_base ({}); expected at least that",
                    self.backoff_max, self.backoff_base
                ),
            ));
        }
        if self.batch_size == 0 || self.batch_size > 10_000 {
            return Err(ConfigError::invalid(
                "alerts.batch_size",
                format!("{} is out of range; expected 1 to 10000", self.batch_size),
            ));
        }
        Ok(())
    }

    fn validate_thresholds(&self) -> Result<(), ConfigError> {
        if self.thresholds.is_empty() {
            return Err(ConfigError::invalid(
                "alerts.thresholds",
                "is empty; expected percentages such as [80, 95]",
            ));
        }
        let mut sorted = self.thresholds.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != self.thresholds.len() {
            return Err(ConfigError::invalid(
                "alerts.thresholds",
                "lists a percentage twice; expected distinct percentages such as [80, 95]",
            ));
        }
        Ok(())
    }
}
