//! `[jobs.<job>]` and `[scheduler]`: when each job runs, how long it may take, and how the
//! daemon catches up and shuts down.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, HumanDuration, Settings};
use crate::job_kind::JobKind;
use crate::schedule::Schedule;

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct JobSettings {
    /// Cron string (5 fields, or 6 with seconds), UTC. Empty disables the job.
    pub schedule: Option<String>,
    pub timeout: Option<HumanDuration>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerSettings {
    pub catch_up_horizon: HumanDuration,
    pub shutdown_grace: HumanDuration,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        SchedulerSettings {
            catch_up_horizon: HumanDuration(Duration::from_secs(7 * 86_400)),
            shutdown_grace: HumanDuration(Duration::from_secs(30)),
        }
    }
}

impl SchedulerSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.shutdown_grace.is_zero() {
            return Err(ConfigError::invalid(
                "scheduler.shutdown_grace",
                "must be longer than 0s; expected e.g. 30s",
            ));
        }
        Ok(())
    }
}

/// A job's settings after validation.
#[derive(Debug, Clone)]
pub struct JobPlan {
    pub kind: JobKind,
    /// `None` = disabled (empty schedule string).
    pub schedule: Option<Schedule>,
    pub timeout: Duration,
}

/// The file's `[jobs.<job>]` tables keyed as the environment keys them (`reset_daily`), so
/// that `USAGE_WORKER__JOBS__RESET_DAILY__…` overrides `[jobs.reset-daily]` of the file;
/// a job given in both spellings is refused, naming both.
pub(super) fn normalize_job_keys(file: &mut toml::Table) -> Result<(), ConfigError> {
    let Some(toml::Value::Table(jobs)) = file.get_mut("jobs") else {
        return Ok(());
    };
    let spelled: Vec<String> = jobs.keys().filter(|k| k.contains('-')).cloned().collect();
    for name in spelled {
        let key = name.replace('-', "_");
        if jobs.contains_key(&key) {
            return Err(ConfigError::invalid(
                format!("jobs.{name}"),
                format!("the same job as jobs.{key}; keep one of the two tables"),
            ));
        }
        if let Some(table) = jobs.remove(&name) {
            jobs.insert(key, table);
        }
    }
    Ok(())
}

/// Every `[jobs.<key>]` must name a job.
pub(super) fn validate_job_keys(jobs: &BTreeMap<String, JobSettings>) -> Result<(), ConfigError> {
    match jobs.keys().find(|name| JobKind::from_name(name).is_none()) {
        Some(name) => Err(ConfigError::invalid(
            format!("jobs.{name}"),
            format!(
                "unknown job; expected one of: {}",
                JobKind::join_all(JobKind::name)
            ),
        )),
        None => Ok(()),
    }
}

impl Settings {
    /// Every job with its effective schedule and timeout, validated.
    pub fn job_plans(&self) -> Result<Vec<JobPlan>, ConfigError> {
        JobKind::ALL
            .iter()
            .map(|&kind| self.plan_for(kind))
            .collect()
    }

    pub fn job_plan(&self, kind: JobKind) -> Result<JobPlan, ConfigError> {
        self.plan_for(kind)
    }

    fn plan_for(&self, kind: JobKind) -> Result<JobPlan, ConfigError> {
        let defaults = kind.defaults();
        let entry = self.jobs.get(kind.config_key());
        let text = entry
            .and_then(|j| j.schedule.clone())
            .unwrap_or_else(|| defaults.schedule.to_string());
        let schedule = if text.trim().is_empty() {
            None
        } else {
            let key = format!("jobs.{}.schedule", kind.name());
            Some(Schedule::parse(&text).map_err(|message| ConfigError::invalid(key, message))?)
        };
        let timeout = entry
            .and_then(|j| j.timeout)
            .map_or(defaults.timeout, |d| d.0);
        if timeout.is_zero() {
            return Err(ConfigError::invalid(
                format!("jobs.{}.timeout", kind.name()),
                "must be longer than 0s; expected e.g. 10m",
            ));
        }
        Ok(JobPlan {
            kind,
            schedule,
            timeout,
        })
    }
}
