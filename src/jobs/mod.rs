//! The jobs. `JobKind` is the single list: the scheduler, `--run`, `--list-jobs` and the
//! docs table all come from it. Adding a job is one arm here and one file beside this one.

pub mod aggregate;
pub mod alerts;
pub mod partitions;
pub mod periods;
pub mod quarantine;
pub mod reset_daily;
pub mod reset_monthly;
pub mod retention;
pub mod stats;
pub mod watermark;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use diesel::pg::PgConnection;
use serde::Serialize;

use crate::config::{JobDefaults, Settings};
use crate::db::DbPool;
use crate::mail::Mailer;

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
                "closes ended daily quota periods at each user's local midnight, reconciled against raw events, and opens the next"
            }
            JobKind::ResetMonthly => {
                "closes ended monthly quota periods (calendar month or billing anchor day, user's zone), reconciled, and opens the next"
            }
            JobKind::Alerts => {
                "emails users past 80 %/95 % of a limit, once per threshold per period, retrying failed sends"
            }
            JobKind::Retention => {
                "deletes usage data older than 24 months: drops whole partitions, trims the boundary month in batches"
            }
        }
    }

    pub fn defaults(self) -> JobDefaults {
        match self {
            JobKind::Partitions => JobDefaults {
                schedule: "0 2 * * *",
                timeout: Duration::from_secs(30 * 60),
            },
            JobKind::Aggregate => JobDefaults {
                schedule: "* * * * *",
                timeout: Duration::from_secs(30 * 60),
            },
            JobKind::Stats => JobDefaults {
                schedule: "10 0 * * *",
                timeout: Duration::from_secs(10 * 60),
            },
            // Often enough that every zone's midnight (some are :30 or :45 off UTC) is
            // honoured within the quarter hour.
            JobKind::ResetDaily | JobKind::ResetMonthly => JobDefaults {
                schedule: "*/15 * * * *",
                timeout: Duration::from_secs(30 * 60),
            },
            JobKind::Alerts => JobDefaults {
                schedule: "*/5 * * * *",
                timeout: Duration::from_secs(10 * 60),
            },
            JobKind::Retention => JobDefaults {
                schedule: "30 3 1 * *",
                timeout: Duration::from_secs(6 * 3_600),
            },
        }
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
    pub fn parse_list(text: &str) -> Result<Vec<JobKind>, String> {
        if text.trim() == "all" {
            return Ok(JobKind::ALL.to_vec());
        }
        let mut kinds = Vec::new();
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let kind = JobKind::from_name(name).ok_or_else(|| {
                format!(
                    "unknown job `{name}`; valid jobs: {}, or all",
                    JobKind::ALL
                        .iter()
                        .map(|k| k.name())
                        .collect::<Vec<_>>()
                        .join(", ")
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

    /// Runs the job once for the instant `now`.
    pub fn run(
        self,
        ctx: &Ctx,
        conn: &mut PgConnection,
        now: DateTime<Utc>,
        opts: &RunOpts,
    ) -> Result<JobReport, JobError> {
        match self {
            JobKind::Partitions => partitions::run(ctx, conn, now, opts),
            JobKind::Aggregate => aggregate::run(ctx, conn, now, opts),
            JobKind::Stats => stats::run(ctx, conn, now, opts),
            JobKind::ResetDaily => reset_daily::run(ctx, conn, now, opts),
            JobKind::ResetMonthly => reset_monthly::run(ctx, conn, now, opts),
            JobKind::Alerts => alerts::run(ctx, conn, now, opts),
            JobKind::Retention => retention::run(ctx, conn, now, opts),
        }
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What every job may use: settings, the pool and the mailer. No globals.
pub struct Ctx {
    pub settings: Arc<Settings>,
    pub pool: DbPool,
    /// The libpq URL, password included: never logged (see `config::redact_url`).
    pub connection_url: String,
    /// Where alert emails go (`mail.transport`).
    pub mailer: Arc<dyn Mailer>,
}

impl Ctx {
    /// Builds the pool and the mailer `mail.transport` names (lazily: nothing connects yet).
    pub fn new(settings: Arc<Settings>, connection_url: String) -> Ctx {
        let mailer = crate::mail::from_settings(&settings.mail);
        Ctx::with_mailer(settings, connection_url, mailer)
    }

    /// As [`Ctx::new`], with the mailer given (tests, or a transport built elsewhere).
    pub fn with_mailer(
        settings: Arc<Settings>,
        connection_url: String,
        mailer: Arc<dyn Mailer>,
    ) -> Ctx {
        let pool = crate::db::build_pool(
            &connection_url,
            settings.database.pool_size,
            settings.database.connect_timeout.0,
        );
        Ctx {
            settings,
            pool,
            connection_url,
            mailer,
        }
    }
}

/// Options of one run.
#[derive(Debug, Clone, Default)]
pub struct RunOpts {
    /// Report what would change; change nothing.
    pub dry_run: bool,
    /// Limit the run to one user (manual resets, rebuilds).
    pub user_id: Option<i64>,
    /// A date range (rebuilds).
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    /// Set when the run must stop (timeout, shutdown); long jobs check it between batches.
    pub cancel: CancelFlag,
}

#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Returns `Err(Cancelled)` once the run has been asked to stop.
    pub fn check(&self) -> Result<(), JobError> {
        if self.is_cancelled() {
            Err(JobError::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// The outcome of a successful run: a one-line summary and details kept in `job_runs.report`.
#[derive(Debug, Clone, Serialize, Default)]
pub struct JobReport {
    pub summary: String,
    pub details: serde_json::Value,
}

impl JobReport {
    pub fn new(summary: impl Into<String>, details: serde_json::Value) -> Self {
        JobReport {
            summary: summary.into(),
            details,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("database error: {0}")]
    Db(#[from] diesel::result::Error),
    #[error("the run was cancelled")]
    Cancelled,
    #[error("{0}")]
    Invalid(String),
}
