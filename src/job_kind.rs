//! Job identity: the [`JobKind`] enum is the single list of jobs, with each job's name,
//! configuration key, description, default schedule and timeout, and advisory lock id.
//! What a job does lives in `jobs`; everything here is plain data every layer may read.

use std::time::Duration;

/// Defaults for each job: its cron schedule and timeout.
pub struct JobDefaults {
    pub schedule: &'static str,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobKind {
    Partitions,
    Aggregate,
    ResetDaily,
    ResetMonthly,
    Alerts,
    Retention,
    Stats,
}

impl JobKind {
    /// Every job, in the order `--run all` runs them.
    pub const ALL: &'static [JobKind] = &[
        JobKind::Partitions,
        JobKind::Aggregate,
        JobKind::ResetDaily,
        JobKind::ResetMonthly,
        JobKind::Alerts,
        JobKind::Retention,
        JobKind::Stats,
    ];

    /// The CLI name (`--run reset-daily`).
    pub fn name(self) -> &'static str {
        match self {
            JobKind::Partitions => "partitions",
            JobKind::Aggregate => "aggregate",
            JobKind::Stats => "stats",
            JobKind::ResetDaily => "reset-daily",
            JobKind::ResetMonthly => "reset-monthly",
            JobKind::Alerts => "alerts",
            JobKind::Retention => "retention",
        }
    }

    /// The key under `[jobs]` in the configuration: the name with `-` written `_`.
    pub fn config_key(self) -> &'static str {
        match self {
            JobKind::Partitions => "partitions",
            JobKind::Aggregate => "aggregate",
            JobKind::Stats => "stats",
            JobKind::ResetDaily => "reset_daily",
            JobKind::ResetMonthly => "reset_monthly",
            JobKind::Alerts => "alerts",
            JobKind::Retention => "retention",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            JobKind::Partitions => {
                "creates monthly partitions of usage_events ahead of time and moves rows out of the default partition"
            }
            JobKind::Aggregate => {
                "adds new usage events into the daily token summary exactly once; --from/--to rebuilds days from raw events"
            }
            JobKind::Stats => {
                "logs and records yesterday's totals: events, active users, tokens, cost, by kind and top models"
            }
            JobKind::ResetDaily => {
                "closes ended daily quota periods at each user's or organization's local midnight, reconciled against raw events, and opens the next"
            }
            JobKind::ResetMonthly => {
                "closes ended monthly quota periods (calendar month or billing anchor day, in the user's or organization's zone), reconciled, and opens the next"
            }
            JobKind::Alerts => {
                "emails users (and organizations' owners and admins) past 80 %/95 % of a limit, once per threshold per period, retrying failed sends"
            }
            JobKind::Retention => {
                "deletes usage data older than 24 months: drops whole partitions, trims the boundary month in batches"
            }
        }
    }

    pub fn defaults(self) -> JobDefaults {
        let (schedule, timeout_minutes) = match self {
            JobKind::Partitions => ("0 2 * * *", 30),
            JobKind::Aggregate => ("* * * * *", 30),
            JobKind::Stats => ("10 0 * * *", 10),
            // Often enough that every zone's midnight (some are :30 or :45 off UTC) is
            // honoured within the quarter hour.
            JobKind::ResetDaily | JobKind::ResetMonthly => ("*/15 * * * *", 30),
            JobKind::Alerts => ("*/5 * * * *", 10),
            JobKind::Retention => ("30 3 1 * *", 6 * 60),
        };
        JobDefaults {
            schedule,
            timeout: Duration::from_secs(timeout_minutes * 60),
        }
    }

    /// Whether a run at an instant later than now does what cannot be undone before that
    /// instant comes: closing quota periods, expiring alerts, deleting rows by age. The other
    /// jobs only add (summaries, partitions, a stats row) and are safe to run ahead.
    pub fn acts_irreversibly_as_of_now(self) -> bool {
        match self {
            JobKind::ResetDaily | JobKind::ResetMonthly | JobKind::Alerts | JobKind::Retention => {
                true
            }
            JobKind::Aggregate | JobKind::Partitions | JobKind::Stats => false,
        }
    }

    /// Whether `--org N` can limit a manual run of this job to one organization.
    pub fn takes_org(self) -> bool {
        matches!(self, JobKind::ResetDaily | JobKind::ResetMonthly)
    }

    /// Second half of the advisory lock key that keeps runs of this job from overlapping.
    /// Fixed numbers: daemons of different versions on one database must agree on them.
    pub fn lock_id(self) -> i32 {
        match self {
            JobKind::Alerts => 4,
            JobKind::Retention => 5,
            JobKind::Partitions => 6,
            JobKind::Aggregate => 1,
            JobKind::Stats => 7,
            JobKind::ResetDaily => 2,
            JobKind::ResetMonthly => 3,
        }
    }

    pub fn from_name(name: &str) -> Option<JobKind> {
        JobKind::ALL.iter().copied().find(|k| k.name() == name)
    }

    pub fn from_config_key(key: &str) -> Option<JobKind> {
        JobKind::ALL.iter().copied().find(|k| k.config_key() == key)
    }

    /// Parses `--run`'s list: names separated by commas, or `all`.
    /// Every job's `label` (its name or its config key), comma separated, for messages that
    /// list the valid jobs.
    pub fn join_all(label: fn(JobKind) -> &'static str) -> String {
        JobKind::ALL
            .iter()
            .map(|&kind| label(kind))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn parse_list(text: &str) -> Result<Vec<JobKind>, String> {
        if text.trim() == "all" {
            return Ok(JobKind::ALL.to_vec());
        }
        let mut kinds = Vec::new();
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let kind = JobKind::from_name(name).ok_or_else(|| {
                format!(
                    "unknown job `{name}`; valid jobs: {}, or all",
                    JobKind::join_all(JobKind::name)
                )
            })?;
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        if kinds.is_empty() {
            return Err("no job named; give e.g. --run partitions or --run all".into());
        }
        Ok(kinds)
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
