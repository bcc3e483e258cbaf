//! What a run is asked to do and how it ended: the types the modules above the scheduler
//! (metrics, service, app) use without depending on the runner or the daemon loop.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::jobs::{JobKind, JobReport, RunOpts};
use crate::ledger::Trigger;

/// What to run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub kind: JobKind,
    pub trigger: Trigger,
    /// The tick this run is for (cron/catch-up), or the instant given to a manual run.
    pub scheduled_for: DateTime<Utc>,
    /// The instant the job takes as now (`--at`); without one, the database's clock when
    /// the run starts (see `db::clock`).
    pub at: Option<DateTime<Utc>>,
    pub opts: RunOpts,
    pub timeout: Duration,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub enum RunOutcome {
    Succeeded {
        run_id: Option<i64>,
        report: JobReport,
        elapsed: Duration,
    },
    Failed {
        run_id: Option<i64>,
        error: String,
        elapsed: Duration,
    },
    /// The run lost its database (connection broken, or the server turned read-only in a
    /// failover): nothing it did in its transaction is kept, it is recorded `abandoned`, and
    /// the daemon repeats it once a primary answers. Not a failure of the job.
    Lost {
        run_id: Option<i64>,
        error: String,
        elapsed: Duration,
    },
    /// The job's lock was held by another run.
    Skipped { run_id: Option<i64>, reason: String },
    /// Another daemon already ran this tick.
    AlreadyRan,
}

impl RunOutcome {
    pub fn status(&self) -> &'static str {
        match self {
            RunOutcome::Succeeded { .. } => "succeeded",
            RunOutcome::Failed { .. } => "failed",
            RunOutcome::Lost { .. } => "abandoned",
            RunOutcome::Skipped { .. } => "skipped",
            RunOutcome::AlreadyRan => "already ran",
        }
    }
}

/// Why the daemon loop could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("scheduler: {0}")]
    Scheduler(String),
    /// The database is reachable but set up so that the daemon must not run on it.
    #[error(transparent)]
    Database(#[from] crate::db::DbError),
}
