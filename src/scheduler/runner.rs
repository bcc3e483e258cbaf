//! One run of one job: its ledger row, the job's advisory lock, its timeout with cancellation
//! on the server, and dry runs rolled back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::Integer;
use tokio::task::{JoinError, JoinHandle};

use super::claim::{Start, begin_run};
use super::outcome::{RunOutcome, RunRequest};
use crate::db::clock::{self, ClockReading};
use crate::db::{self, DbError};
use crate::jobs::{Ctx, JobError, JobKind, JobReport};
use crate::ledger::{self, Identity, RunStatus};

#[derive(QueryableByName)]
struct BackendPid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

/// What the job's blocking task gives back: the run's connection and the job's result.
type JobResult = (PgConnection, Result<JobReport, JobError>);

/// Runs one job once: lock, ledger row, the job itself under its timeout, ledger update.
///
/// The run gets a connection of its own (not from the pool): the advisory lock lives exactly
/// as long as that session. A killed run's session ends once the server notices its client is
/// gone (`db::CLIENT_CHECK_INTERVAL`), and the next run waits for that (see `claim`).
/// A dry run takes no lock, writes no ledger row and runs inside a transaction that is
/// rolled back.
pub async fn execute(
    ctx: Arc<Ctx>,
    identity: Identity,
    request: RunRequest,
) -> Result<RunOutcome, DbError> {
    let started = Instant::now();
    let kind = request.kind;
    let (conn, start, backend_pid, clock) = open_run(&ctx, identity, &request).await?;
    let run_id = match start {
        Start::Run(id) => Some(id),
        Start::DryRun => None,
        Start::Skipped(run_id, reason) => {
            tracing::warn!(job.name = kind.name(), reason = %reason, "run skipped");
            return Ok(RunOutcome::Skipped { run_id, reason });
        }
        Start::AlreadyRan => return Ok(RunOutcome::AlreadyRan),
    };
    tracing::info!(
        job.name = kind.name(),
        job.run_id = run_id,
        job.trigger = request.trigger.as_str(),
        job.scheduled_for = %request.scheduled_for,
        dry_run = request.opts.dry_run,
        "job started"
    );

    let (joined, timed_out) =
        run_with_timeout(&ctx, conn, backend_pid, &request, run_id, clock).await;
    let (outcome, conn) = outcome_of(joined, timed_out, &request, run_id, started.elapsed());
    if let Some(id) = run_id {
        record_outcome(&ctx, conn, kind, id, &outcome).await;
    }
    log_outcome(kind, &outcome);
    Ok(outcome)
}

/// What [`open_run`] gives back: the run's connection, how it starts, the connection's
/// server process (which a timeout cancels) and the clocks compared as it started.
type OpenRun = (PgConnection, Start, Option<i32>, ClockReading);

/// Connects, compares the clocks and starts the run (see [`begin_run`]).
async fn open_run(
    ctx: &Arc<Ctx>,
    identity: Identity,
    request: &RunRequest,
) -> Result<OpenRun, DbError> {
    let ctx = ctx.clone();
    let request = request.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = ctx.connect()?;
        let clock = clock::read(&mut conn)?;
        ctx.clock.record(clock);
        let start = begin_run(&mut conn, &identity, &request)?;
        let backend_pid = diesel::sql_query("SELECT pg_backend_pid() AS pid")
            .get_result::<BackendPid>(&mut conn)
            .map(|r| r.pid)
            .ok();
        Ok((conn, start, backend_pid, clock))
    })
    .await
    .map_err(|e| DbError::Migration(format!("run setup task failed: {e}")))?
}

/// Runs the job on a blocking thread, as of the request's instant or else the database's
/// clock. Past the request's timeout the job is cancelled and awaited; the second value says
/// whether that happened. A job that acts irreversibly fails at once when the clocks disagree
/// too much (see `db::clock`).
async fn run_with_timeout(
    ctx: &Arc<Ctx>,
    mut conn: PgConnection,
    backend_pid: Option<i32>,
    request: &RunRequest,
    run_id: Option<i64>,
    clock: ClockReading,
) -> (Result<JobResult, JoinError>, bool) {
    let kind = request.kind;
    let job_ctx = ctx.clone();
    let opts = request.opts.clone();
    let now = request.at.unwrap_or(clock.database_now);
    let mut handle = tokio::task::spawn_blocking(move || {
        // A dry run is rolled back even if the job forgot to check `dry_run`.
        let irreversible = kind.acts_irreversibly_as_of_now() && !opts.dry_run;
        let refusal = irreversible.then(|| clock.refusal(kind.name())).flatten();
        let result = if let Some(refusal) = refusal {
            Err(JobError::Invalid(refusal))
        } else if opts.dry_run {
            db::rolled_back(&mut conn, |conn| kind.run(&job_ctx, conn, now, &opts))
        } else {
            kind.run(&job_ctx, &mut conn, now, &opts)
        };
        (conn, result)
    });
    tokio::select! {
        joined = &mut handle => (joined, false),
        _ = tokio::time::sleep(request.timeout) => {
            tracing::warn!(job.name = kind.name(), job.run_id = run_id, timeout_s = request.timeout.as_secs(), "job timed out; cancelling it");
            request.opts.cancel.cancel();
            (cancel_until_done(ctx, backend_pid, &mut handle).await, true)
        }
    }
}

/// Cancels the run's statement on the server, again every second, until the job returns.
async fn cancel_until_done(
    ctx: &Arc<Ctx>,
    backend_pid: Option<i32>,
    handle: &mut JoinHandle<JobResult>,
) -> Result<JobResult, JoinError> {
    loop {
        if let Some(pid) = backend_pid {
            let pool = ctx.pool.clone();
            let _ = tokio::task::spawn_blocking(move || {
                if let Ok(mut c) = pool.get() {
                    let _ = diesel::sql_query("SELECT pg_cancel_backend($1)")
                        .bind::<Integer, _>(pid)
                        .execute(&mut *c);
                }
            })
            .await;
        }
        tokio::select! {
            joined = &mut *handle => return joined,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// How the run ended, and its connection when the job gave it back.
fn outcome_of(
    joined: Result<JobResult, JoinError>,
    timed_out: bool,
    request: &RunRequest,
    run_id: Option<i64>,
    elapsed: Duration,
) -> (RunOutcome, Option<PgConnection>) {
    let (conn, result) = match joined {
        Ok(joined) => joined,
        Err(join_error) => {
            let error = format!("the job panicked: {join_error}");
            let outcome = RunOutcome::Failed {
                run_id,
                error,
                elapsed,
            };
            return (outcome, None);
        }
    };
    let error = if timed_out {
        format!(
            "timed out after {}s (jobs.{}.timeout) and was cancelled",
            request.timeout.as_secs(),
            request.kind.name()
        )
    } else {
        match result {
            Ok(report) => {
                let outcome = RunOutcome::Succeeded {
                    run_id,
                    report,
                    elapsed,
                };
                return (outcome, Some(conn));
            }
            Err(e) if e.lost_database() => {
                let outcome = RunOutcome::Lost {
                    run_id,
                    error: e.to_string(),
                    elapsed,
                };
                // The connection is broken or read-only: the run is recorded on another.
                return (outcome, None);
            }
            Err(e) => e.to_string(),
        }
    };
    let outcome = RunOutcome::Failed {
        run_id,
        error,
        elapsed,
    };
    (outcome, Some(conn))
}

async fn record_outcome(
    ctx: &Arc<Ctx>,
    conn: Option<PgConnection>,
    kind: JobKind,
    id: i64,
    outcome: &RunOutcome,
) {
    let (status, report, error) = match outcome {
        RunOutcome::Succeeded { report, .. } => (
            RunStatus::Succeeded,
            serde_json::to_value(report).ok(),
            None,
        ),
        RunOutcome::Failed { error, .. } => (RunStatus::Failed, None, Some(error.clone())),
        RunOutcome::Lost { error, .. } => (
            RunStatus::Abandoned,
            None,
            Some(format!(
                "lost the database: {error}; repeated once a primary answers"
            )),
        ),
        _ => return,
    };
    let ctx = ctx.clone();
    let result = tokio::task::spawn_blocking(move || -> Result<(), DbError> {
        // The run's own connection still holds the lock; use it when it is healthy.
        if let Some(mut conn) = conn
            && ledger::finish_run(&mut conn, id, status, report.as_ref(), error.as_deref()).is_ok()
        {
            let _ = ledger::unlock(&mut conn, kind);
            return Ok(());
        }
        let mut conn = db::checkout(&ctx.pool, &ctx.connection_url)?;
        ledger::finish_run(&mut conn, id, status, report.as_ref(), error.as_deref())?;
        Ok(())
    })
    .await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(
            job.name = kind.name(),
            job.run_id = id,
            error = %e,
            "could not record the run's end; the next run marks it abandoned"
        ),
        Err(e) => {
            tracing::error!(job.name = kind.name(), job.run_id = id, error = %e, "recording task failed")
        }
    }
}

fn log_outcome(kind: JobKind, outcome: &RunOutcome) {
    match outcome {
        RunOutcome::Succeeded {
            run_id,
            report,
            elapsed,
        } => tracing::info!(
            job.name = kind.name(),
            job.run_id = run_id,
            duration_ms = elapsed.as_millis() as u64,
            summary = %report.summary,
            "job succeeded"
        ),
        RunOutcome::Failed {
            run_id,
            error,
            elapsed,
        } => tracing::error!(
            job.name = kind.name(),
            job.run_id = run_id,
            duration_ms = elapsed.as_millis() as u64,
            error = %error,
            "job failed"
        ),
        RunOutcome::Lost {
            run_id,
            error,
            elapsed,
        } => tracing::warn!(
            job.name = kind.name(),
            job.run_id = run_id,
            duration_ms = elapsed.as_millis() as u64,
            error = %error,
            "job lost the database (network, restart or failover); nothing it did in its \
             transaction is kept; it runs again once a primary answers"
        ),
        RunOutcome::Skipped { .. } | RunOutcome::AlreadyRan => {}
    }
}
