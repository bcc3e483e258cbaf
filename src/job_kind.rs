//! Job identity: the [`JobKind`] enum is the single list of jobs, with each job's name,
//! configuration key, description, default schedule and timeout, and advisory lock id.
//! What a job does lives in `jobs`; everything here is plain data every layer may read.

use std::time::Duration;

/// What a job is, as data (see [`JobKind::info`]).
struct JobInfo {
    name: &'static str,
    config_key: &'static str,
    description: &'static str,
    schedule: &'static str,
    timeout_minutes: u64,
    irreversible: bool,
    lock_id: i32,
}

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

    /// Everything about a job that is data: one arm per job.
    fn info(self) -> JobInfo {
        match self {
            JobKind::Partitions => JobInfo {
                name: "partitions",
                config_key: "partitions",
                description: "creates monthly partitions of usage_events ahead of time and moves rows out of the default partition",
                schedule: "0 2 * * *",
                timeout_minutes: 30,
                irreversible: false,
                lock_id: 6,
            },
            JobKind::Aggregate => JobInfo {
                name: "aggregate",
                config_key: "aggregate",
                description: "adds new usage events into the daily token summary exactly once; --from/--to rebuilds days from raw events",
                schedule: "*/5 * * * * *",
                timeout_minutes: 30,
                irreversible: false,
                lock_id: 1,
            },
            JobKind::Stats => JobInfo {
                name: "stats",
                config_key: "stats",
                description: "logs and records yesterday's totals: events, active users, tokens, cost, by kind and top models",
                schedule: "10 0 * * *",
                timeout_minutes: 10,
                irreversible: false,
                lock_id: 7,
            },
            JobKind::ResetDaily => JobInfo {
                name: "reset-daily",
                config_key: "reset_daily",
                description: "closes ended daily quota periods at each user's or organization's local midnight, reconciled against raw events, and opens the next",
                // Often enough that every zone's midnight (some are :30 or :45 off UTC) is
                // honoured within the quarter hour.
                schedule: "*/15 * * * *",
                timeout_minutes: 30,
                irreversible: true,
                lock_id: 2,
            },
            JobKind::ResetMonthly => JobInfo {
                name: "reset-monthly",
                config_key: "reset_monthly",
                description: "closes ended monthly quota periods (calendar month or billing anchor day, in the user's or organization's zone), reconciled, and opens the next",
                schedule: "*/15 * * * *",
                timeout_minutes: 30,
                irreversible: true,
                lock_id: 3,
            },
            JobKind::Alerts => JobInfo {
                name: "alerts",
                config_key: "alerts",
                description: "emails users (and organizations' owners and admins) past 80 %/95 % of a limit, once per threshold per period, retrying failed sends",
                schedule: "*/5 * * * *",
                timeout_minutes: 10,
                irreversible: true,
                lock_id: 4,
            },
            JobKind::Retention => JobInfo {
                name: "retention",
                config_key: "retention",
                description: "deletes usage data older than 24 months: drops whole partitions, trims the boundary month in batches",
                schedule: "30 3 1 * *",
                timeout_minutes: 6 * 60,
                irreversible: true,
                lock_id: 5,
            },
        }
    }

    /// The CLI name (`--run reset-daily`).
    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// The job's key in the configuration as the environment spells it (`RESET_DAILY` in
    /// `USAGE_WORKER__JOBS__RESET_DAILY__SCHEDULE`: a variable's name has no `-`): the name with
    /// `-` written `_`. A configuration file may use either; the documentation uses the name.
    pub fn config_key(self) -> &'static str {
        self.info().config_key
    }

    pub fn description(self) -> &'static str {
        self.info().description
    }

    pub fn defaults(self) -> JobDefaults {
        let info = self.info();
        JobDefaults {
            schedule: info.schedule,
            timeout: Duration::from_secs(info.timeout_minutes * 60),
        }
    }

    /// Whether a run at an instant later than now does what cannot be undone before that
    /// instant comes: closing quota periods, expiring alerts, deleting rows by age. The other
    /// jobs only add (summaries, partitions, a stats row) and are safe to run ahead.
    pub fn acts_irreversibly_as_of_now(self) -> bool {
        self.info().irreversible
    }

    /// Whether `--org N` can limit a manual run of this job to one organization.
    pub fn takes_org(self) -> bool {
        matches!(self, JobKind::ResetDaily | JobKind::ResetMonthly)
    }

    /// Second half of the advisory lock key that keeps runs of this job from overlapping.
    /// Fixed numbers: daemons of different versions on one database must agree on them.
    pub fn lock_id(self) -> i32 {
        self.info().lock_id
    }

    /// The job named `name` in either spelling: `reset-daily` or `reset_daily`.
    pub fn from_name(name: &str) -> Option<JobKind> {
        JobKind::ALL
            .iter()
            .copied()
            .find(|k| k.name() == name || k.config_key() == name)
    }

    /// Every job's name, in `ALL`'s order: the `text[]` that queries over all jobs bind.
    pub fn all_names() -> Vec<&'static str> {
        JobKind::ALL.iter().map(|k| k.name()).collect()
    }

    /// Every job's `label` (its name or its config key), comma separated, for messages that
    /// list the valid jobs.
    pub fn join_all(label: fn(JobKind) -> &'static str) -> String {
        JobKind::ALL
            .iter()
            .map(|&kind| label(kind))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Parses `--run`'s list: names separated by commas (either spelling), or `all`.
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
