//! The jobs. `JobKind` (in `job_kind`) is the single list: the scheduler, `--run`,
//! `--list-jobs` and the docs table all come from it. Adding a job is one arm in
//! `JobKind::info` (its name, configuration key, description, defaults and lock id), one arm
//! in [`JobKind::run`] here and one file beside this one.

pub mod aggregate;
pub mod alerts;
pub mod failover;
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

use chrono::{DateTime, NaiveDate, Utc};
use diesel::pg::PgConnection;
use serde::Serialize;

use crate::config::Settings;
use crate::db::{DbError, DbPool};
pub use crate::job_kind::JobKind;
use crate::mail::Mailer;
use crate::mail::webhook::WebhookTransport;

impl JobKind {
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

/// What every job may use: settings, the pool, the mailer and the webhook transport. No globals.
pub struct Ctx {
    pub settings: Arc<Settings>,
    pub pool: DbPool,
    /// The libpq URL, password included: never logged (see `redact::redact_url`).
    pub connection_url: String,
    /// Where alert emails go (`mail.transport`).
    pub mailer: Arc<dyn Mailer>,
    /// How alert webhooks are sent (`[[alerts.webhooks]]`); HTTP unless a test replaces it.
    pub webhooks: Arc<dyn WebhookTransport>,
    /// The latest skew between this host's clock and the database's (see `db::clock`).
    pub clock: crate::db::clock::ClockWatch,
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
            &settings.database.schema,
        );
        Ctx {
            settings,
            pool,
            connection_url,
            mailer,
            webhooks: crate::mail::webhook::http_transport(),
            clock: Default::default(),
        }
    }
}

impl Ctx {
    /// Opens one connection of its own (not from the pool) in the worker's schema.
    pub fn connect(&self) -> Result<PgConnection, DbError> {
        let mut conn = crate::db::connect_within(
            &self.connection_url,
            self.settings.database.connect_timeout.0,
        )?;
        crate::db::use_schema(&mut conn, &self.settings.database.schema)?;
        Ok(conn)
    }

    /// Applies pending migrations in the worker's schema on `conn`.
    pub fn migrate(&self, conn: &mut PgConnection) -> Result<Vec<String>, DbError> {
        crate::db::run_migrations(conn, &self.settings.database.schema)
    }
}

/// Options of one run.
#[derive(Debug, Clone, Default)]
pub struct RunOpts {
    /// Report what would change; change nothing.
    pub dry_run: bool,
    /// Limit the run to one user (manual resets, rebuilds).
    pub user_id: Option<i64>,
    /// Limit the run to one organization's shared quota (manual resets).
    pub org_id: Option<i64>,
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

impl JobError {
    /// Whether the run lost its database rather than failed: the connection broke (network,
    /// server restart, a failover), or the server became a read-only standby (SQLSTATE
    /// 25006, a former primary after a failover). The run's open transaction is rolled
    /// back; the run is repeated once a primary answers.
    pub fn lost_database(&self) -> bool {
        use diesel::result::{DatabaseErrorKind, Error};
        matches!(
            self,
            JobError::Db(Error::DatabaseError(
                DatabaseErrorKind::ClosedConnection
                    | DatabaseErrorKind::UnableToSendCommand
                    | DatabaseErrorKind::ReadOnlyTransaction,
                _,
            ))
        )
    }
}
