//! The run ledger (`job_runs`) and the per-job advisory locks.
//!
//! Order of a run: take the job's advisory lock; mark the job's `running` rows `abandoned`
//! (whoever wrote them no longer holds the lock, so they crashed); insert our row; run;
//! finish the row; release the lock. A cron tick that another daemon already ran conflicts
//! on the unique index `job_runs_one_run_per_tick` and is not run again; `skipped` and
//! `abandoned` rows do not hold a tick (migration 6), so neither stops it from running.

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Integer, Jsonb, Nullable, Text, Timestamptz};
use serde::Serialize;

use crate::db::{ADVISORY_LOCK_CLASS, Flag};
use crate::jobs::JobKind;

const MARK_ABANDONED_SQL: &str = include_str!("sql/ledger_mark_abandoned.sql");
const INSERT_RUN_SQL: &str = include_str!("sql/ledger_insert_run.sql");
const RECENT_RUNS_SQL: &str = include_str!("sql/ledger_recent_runs.sql");
const LAST_RUNS_SQL: &str = include_str!("sql/ledger_last_runs.sql");
const RUNNING_RUN_SQL: &str = include_str!("sql/ledger_running_run.sql");
const TICK_RUN_SQL: &str = include_str!("sql/ledger_tick_run.sql");
const SUCCEEDED_SINCE_SQL: &str = include_str!("sql/ledger_succeeded_since.sql");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Cron,
    Catchup,
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Cron => "cron",
            Trigger::Catchup => "catchup",
            Trigger::Manual => "manual",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Abandoned,
    Skipped,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Abandoned => "abandoned",
            RunStatus::Skipped => "skipped",
        }
    }
}

/// Who this process is, as recorded in `job_runs.host` / `pid`.
#[derive(Debug, Clone)]
pub struct Identity {
    pub host: String,
    pub pid: i32,
}

impl Identity {
    pub fn current() -> Identity {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown".into());
        Identity {
            host,
            pid: std::process::id() as i32,
        }
    }

    /// Whether the process `pid` on `host` is known to have ended: only a process on this host
    /// can be checked; one elsewhere is taken to be alive.
    pub fn process_ended(&self, host: &str, pid: i32) -> bool {
        if host != self.host || pid <= 0 {
            return false;
        }
        // SAFETY: signal 0 only checks that the process exists; nothing is sent.
        if unsafe { libc::kill(pid, 0) } != 0 {
            return std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        }
        // A killed process its parent has not reaped yet still has its pid but holds nothing.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let state = stat.rsplit_once(") ")?.1.chars().next()?;
                Some(matches!(state, 'Z' | 'X'))
            })
            .unwrap_or(false)
    }
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// Tries the job's session-level advisory lock on this connection.
pub fn try_lock(conn: &mut PgConnection, job: JobKind) -> QueryResult<bool> {
    let row: Flag = diesel::sql_query("SELECT pg_try_advisory_lock($1, $2) AS value")
        .bind::<Integer, _>(ADVISORY_LOCK_CLASS)
        .bind::<Integer, _>(job.lock_id())
        .get_result(conn)?;
    Ok(row.value)
}

pub fn unlock(conn: &mut PgConnection, job: JobKind) -> QueryResult<()> {
    diesel::sql_query("SELECT pg_advisory_unlock($1, $2)")
        .bind::<Integer, _>(ADVISORY_LOCK_CLASS)
        .bind::<Integer, _>(job.lock_id())
        .execute(conn)?;
    Ok(())
}

/// Marks the job's `running` rows abandoned. Call only while holding the job's lock: then
/// no live process is running the job, so those rows were left by a crash.
pub fn mark_abandoned(conn: &mut PgConnection, job: JobKind) -> QueryResult<usize> {
    let count = diesel::sql_query(MARK_ABANDONED_SQL)
        .bind::<Text, _>(job.name())
        .execute(conn)?;
    if count > 0 {
        tracing::warn!(
            job.name = job.name(),
            runs = count,
            "runs left running by a crashed process marked abandoned"
        );
    }
    Ok(count)
}

pub struct NewRun<'a> {
    pub job: JobKind,
    pub trigger: Trigger,
    pub scheduled_for: DateTime<Utc>,
    pub status: RunStatus,
    pub identity: &'a Identity,
    pub user_id: Option<i64>,
    pub error: Option<String>,
}

/// Inserts a run; `None` when the tick already has a run that holds it (running, succeeded
/// or failed: another daemon got there first). A `skipped` row never conflicts.
pub fn insert_run(conn: &mut PgConnection, run: &NewRun<'_>) -> QueryResult<Option<i64>> {
    let finished = run.status != RunStatus::Running;
    let row: Option<Id> = diesel::sql_query(INSERT_RUN_SQL)
        .bind::<Text, _>(run.job.name())
        .bind::<Text, _>(run.trigger.as_str())
        .bind::<Timestamptz, _>(run.scheduled_for)
        .bind::<Text, _>(run.status.as_str())
        .bind::<Text, _>(&run.identity.host)
        .bind::<Integer, _>(run.identity.pid)
        .bind::<Nullable<BigInt>, _>(run.user_id)
        .bind::<Nullable<Text>, _>(run.error.as_deref())
        .bind::<Bool, _>(finished)
        .get_result(conn)
        .optional()?;
    Ok(row.map(|r| r.id))
}

pub fn finish_run(
    conn: &mut PgConnection,
    id: i64,
    status: RunStatus,
    report: Option<&serde_json::Value>,
    error: Option<&str>,
) -> QueryResult<()> {
    diesel::sql_query(
        "UPDATE job_runs SET status = $2, report = $3, error = $4, finished_at = now() WHERE id = $1",
    )
    .bind::<BigInt, _>(id)
    .bind::<Text, _>(status.as_str())
    .bind::<Nullable<Jsonb>, _>(report)
    .bind::<Nullable<Text>, _>(error)
    .execute(conn)?;
    Ok(())
}

#[derive(QueryableByName, Debug, Clone, Serialize)]
pub struct RunRow {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub job: String,
    #[diesel(sql_type = Text)]
    pub trigger: String,
    #[diesel(sql_type = Timestamptz)]
    pub scheduled_for: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub started_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub finished_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub summary: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub error: Option<String>,
    #[diesel(sql_type = Text)]
    pub host: String,
    #[diesel(sql_type = Integer)]
    pub pid: i32,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub user_id: Option<i64>,
}

/// The most recent runs, newest first.
pub fn recent_runs(conn: &mut PgConnection, limit: i64) -> QueryResult<Vec<RunRow>> {
    diesel::sql_query(RECENT_RUNS_SQL)
        .bind::<BigInt, _>(limit)
        .load(conn)
}

/// The latest run of each job.
pub fn last_runs(conn: &mut PgConnection) -> QueryResult<Vec<RunRow>> {
    diesel::sql_query(LAST_RUNS_SQL)
        .bind::<diesel::sql_types::Array<Text>, _>(JobKind::all_names())
        .load(conn)
}

/// The run currently holding the job (for "skipped: held by …" messages).
pub fn running_run(conn: &mut PgConnection, job: JobKind) -> QueryResult<Option<RunRow>> {
    diesel::sql_query(RUNNING_RUN_SQL)
        .bind::<Text, _>(job.name())
        .get_result(conn)
        .optional()
}

/// The cron or catch-up run holding the tick `tick` of the job (see `job_runs_one_run_per_tick`):
/// one running, succeeded or failed.
pub fn tick_run(
    conn: &mut PgConnection,
    job: JobKind,
    tick: DateTime<Utc>,
) -> QueryResult<Option<RunRow>> {
    diesel::sql_query(TICK_RUN_SQL)
        .bind::<Text, _>(job.name())
        .bind::<Timestamptz, _>(tick)
        .get_result(conn)
        .optional()
}

/// Whether the job has succeeded for the tick `tick` or later: a cron or catch-up run
/// scheduled at or after it, or a manual run started at or after it. A manual run limited to
/// one user (`user_id`) or organization (`org_id` in its report) did not do the tick's work.
pub fn succeeded_since(
    conn: &mut PgConnection,
    job: JobKind,
    tick: DateTime<Utc>,
) -> QueryResult<bool> {
    let row: Flag = diesel::sql_query(SUCCEEDED_SINCE_SQL)
        .bind::<Text, _>(job.name())
        .bind::<Timestamptz, _>(tick)
        .get_result(conn)?;
    Ok(row.value)
}
