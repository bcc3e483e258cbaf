//! Claiming a run before it starts: the job's advisory lock, then the tick's row in the ledger.
//!
//! The lock is a session lock of the run's own connection. When the process holding it has
//! ended (kill -9), PostgreSQL ends its session within `client_connection_check_interval` of the
//! statement noticing, so the run waits for the lock instead of being skipped. A live holder
//! means the job is running: the run is skipped, or, when the holder runs the same tick, left to
//! it without a record.

use std::time::{Duration, Instant};

use diesel::pg::PgConnection;

use super::outcome::RunRequest;
use crate::db::{ADVISORY_LOCK_CLASS, DbError};
use crate::jobs::JobKind;
use crate::ledger::{self, Identity, NewRun, RunRow, RunStatus, Trigger};

/// How a run begins.
pub(super) enum Start {
    Run(i64),
    DryRun,
    Skipped(Option<i64>, String),
    AlreadyRan,
}

/// The longest a run waits for the session of an ended process to let go of the job's lock
/// (never longer than the run's own timeout). PostgreSQL normally ends it within seconds.
const ENDED_HOLDER_WAIT: Duration = Duration::from_secs(60);

/// How long a run waits for a lock holder to record its run: between taking the lock and
/// inserting its row a run takes milliseconds, and the row says whether it runs this tick.
const UNRECORDED_HOLDER_WAIT: Duration = Duration::from_secs(2);

const LOCK_POLL: Duration = Duration::from_millis(100);

/// What trying the job's lock came to.
enum Lock {
    Taken,
    /// Another live run holds the tick: nothing to do and nothing to record.
    TickTaken,
    /// The job is busy; the reason says with what.
    Busy(String),
}

/// Takes the job's lock and records the run; a dry run takes no lock and writes no row.
pub(super) fn begin_run(
    conn: &mut PgConnection,
    identity: &Identity,
    req: &RunRequest,
) -> Result<Start, DbError> {
    if req.opts.dry_run {
        return Ok(Start::DryRun);
    }
    let kind = req.kind;
    let new_run = |status, error| NewRun {
        job: kind,
        trigger: req.trigger,
        scheduled_for: req.scheduled_for,
        status,
        identity,
        user_id: req.opts.user_id,
        error,
    };
    match take_lock(conn, identity, req)? {
        Lock::Taken => {}
        Lock::TickTaken => return Ok(Start::AlreadyRan),
        Lock::Busy(reason) => {
            let id = ledger::insert_run(conn, &new_run(RunStatus::Skipped, Some(reason.clone())))?;
            return Ok(Start::Skipped(id, reason));
        }
    }
    ledger::mark_abandoned(conn, kind)?;
    match ledger::insert_run(conn, &new_run(RunStatus::Running, None))? {
        Some(id) => Ok(Start::Run(id)),
        None => {
            ledger::unlock(conn, kind)?;
            Ok(Start::AlreadyRan)
        }
    }
}

/// Tries the job's lock until it is taken, the tick turns out to be another live run's, or
/// the job is found busy: held by a live run, by an ended process past the wait, or by a
/// holder that records no run.
fn take_lock(
    conn: &mut PgConnection,
    identity: &Identity,
    req: &RunRequest,
) -> Result<Lock, DbError> {
    let kind = req.kind;
    let started = Instant::now();
    let ended_wait = ENDED_HOLDER_WAIT.min(req.timeout);
    let mut announced = false;
    loop {
        if ledger::try_lock(conn, kind)? {
            if announced {
                tracing::info!(
                    job.name = kind.name(),
                    waited_ms = started.elapsed().as_millis() as u64,
                    "the ended process's session is gone; job lock taken"
                );
            }
            return Ok(Lock::Taken);
        }
        let holder = ledger::running_run(conn, kind)?;
        let ended = holder
            .as_ref()
            .filter(|h| identity.process_ended(&h.host, h.pid));
        if ended.is_none() && tick_held_by_live_run(conn, identity, req)? {
            return Ok(Lock::TickTaken);
        }
        let waited = started.elapsed();
        match (holder.as_ref(), ended) {
            (_, Some(dead)) => {
                if !announced {
                    announced = true;
                    tracing::warn!(
                        job.name = kind.name(),
                        "job {} is held by the session of an ended process ({} pid {}, run {}); \
                         waiting up to {}s for PostgreSQL to end it",
                        kind.name(),
                        dead.host,
                        dead.pid,
                        dead.id,
                        ended_wait.as_secs()
                    );
                }
                if waited >= ended_wait {
                    return Ok(Lock::Busy(ended_holder_reason(kind, dead, ended_wait)));
                }
            }
            (Some(live), None) => return Ok(Lock::Busy(live_holder_reason(kind, live))),
            (None, None) if waited >= UNRECORDED_HOLDER_WAIT => {
                return Ok(Lock::Busy(format!(
                    "job {} is locked by another process",
                    kind.name()
                )));
            }
            (None, None) => {}
        }
        if req.opts.cancel.is_cancelled() {
            return Ok(Lock::Busy(format!(
                "job {} was not started: stopped while waiting for its lock",
                kind.name()
            )));
        }
        std::thread::sleep(LOCK_POLL);
    }
}

/// Whether a cron or catch-up run's tick is held by another run that is not a dead one's
/// `running` row (that one is marked abandoned once its lock is free).
fn tick_held_by_live_run(
    conn: &mut PgConnection,
    identity: &Identity,
    req: &RunRequest,
) -> Result<bool, DbError> {
    if req.trigger == Trigger::Manual {
        return Ok(false);
    }
    Ok(
        ledger::tick_run(conn, req.kind, req.scheduled_for)?.is_some_and(|run| {
            run.status != RunStatus::Running.as_str() || !identity.process_ended(&run.host, run.pid)
        }),
    )
}

fn live_holder_reason(kind: JobKind, holder: &RunRow) -> String {
    format!(
        "job {} is already running: run {} ({} on {} pid {}, started {})",
        kind.name(),
        holder.id,
        holder.trigger,
        holder.host,
        holder.pid,
        holder.started_at.format("%Y-%m-%d %H:%M:%SZ")
    )
}

fn ended_holder_reason(kind: JobKind, dead: &RunRow, waited: Duration) -> String {
    format!(
        "job {} is held by the session of an ended process ({} pid {}, run {}) that PostgreSQL \
         did not end within {}s; end it with SELECT pg_terminate_backend(pid) FROM pg_locks \
         WHERE locktype = 'advisory' AND classid = {} AND objid = {} AND granted, then run the \
         job again",
        kind.name(),
        dead.host,
        dead.pid,
        dead.id,
        waited.as_secs(),
        ADVISORY_LOCK_CLASS,
        kind.lock_id()
    )
}
