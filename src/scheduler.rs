//! Running jobs: one run with its ledger row, lock, timeout and cancellation
//! ([`execute`]), and the daemon loop that wakes at UTC cron instants ([`run_daemon`]).
//!
//! tokio-cron-scheduler is used only to wake up at each job's cron instants. Everything that
//! must survive a crash or be shared between daemons lives in `job_runs`: at-most-once per
//! tick, abandoned runs, catch-up. Overlap is prevented by per-job advisory locks, and
//! shutdown waits for running jobs here, not in the scheduler crate.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::Integer;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::config::JobPlan;
use crate::db::{self, DbError};
use crate::jobs::{CancelFlag, Ctx, JobKind, JobReport, RunOpts};
use crate::ledger::{self, Identity, NewRun, RunStatus, Trigger};

/// What to run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub kind: JobKind,
    pub trigger: Trigger,
    /// The tick this run is for (cron/catch-up), or the instant given to a manual run.
    pub scheduled_for: DateTime<Utc>,
    /// The instant the job takes as now.
    pub now: DateTime<Utc>,
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
            RunOutcome::Skipped { .. } => "skipped",
            RunOutcome::AlreadyRan => "already ran",
        }
    }
}

#[derive(QueryableByName)]
struct BackendPid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

enum Start {
    Run(i64),
    DryRun,
    Skipped(Option<i64>, String),
    AlreadyRan,
}

/// Runs one job once: lock, ledger row, the job itself under its timeout, ledger update.
///
/// The run gets a connection of its own (not from the pool): the advisory lock lives exactly
/// as long as that connection, so a panicking or killed run can never leave it held.
/// A dry run takes no lock, writes no ledger row and runs inside a transaction that is
/// rolled back.
pub async fn execute(
    ctx: Arc<Ctx>,
    identity: Identity,
    request: RunRequest,
) -> Result<RunOutcome, DbError> {
    let started = Instant::now();
    let kind = request.kind;
    let url = ctx.connection_url.clone();
    let req = request.clone();
    let (mut conn, start) = tokio::task::spawn_blocking(move || -> Result<_, DbError> {
        let mut conn = db::connect(&url)?;
        let start = begin_run(&mut conn, &identity, &req)?;
        Ok((conn, start))
    })
    .await
    .map_err(|e| DbError::Migration(format!("run setup task failed: {e}")))??;

    let run_id = match start {
        Start::Run(id) => Some(id),
        Start::DryRun => None,
        Start::Skipped(run_id, reason) => {
            tracing::warn!(job.name = kind.name(), reason = %reason, "run skipped");
            return Ok(RunOutcome::Skipped { run_id, reason });
        }
        Start::AlreadyRan => return Ok(RunOutcome::AlreadyRan),
    };

    let backend_pid = diesel::sql_query("SELECT pg_backend_pid() AS pid")
        .get_result::<BackendPid>(&mut conn)
        .map(|r| r.pid)
        .ok();
    tracing::info!(
        job.name = kind.name(),
        job.run_id = run_id,
        job.trigger = request.trigger.as_str(),
        job.scheduled_for = %request.scheduled_for,
        dry_run = request.opts.dry_run,
        "job started"
    );

    let job_ctx = ctx.clone();
    let opts = request.opts.clone();
    let now = request.now;
    let dry_run = opts.dry_run;
    let mut handle = tokio::task::spawn_blocking(move || {
        // A dry run is rolled back even if the job forgot to check `dry_run`.
        let result = if dry_run {
            db::rolled_back(&mut conn, |conn| kind.run(&job_ctx, conn, now, &opts))
        } else {
            kind.run(&job_ctx, &mut conn, now, &opts)
        };
        (conn, result)
    });

    let mut timed_out = false;
    let joined = tokio::select! {
        joined = &mut handle => joined,
        _ = tokio::time::sleep(request.timeout) => {
            timed_out = true;
            tracing::warn!(job.name = kind.name(), job.run_id = run_id, timeout_s = request.timeout.as_secs(), "job timed out; cancelling it");
            request.opts.cancel.cancel();
            cancel_until_done(&ctx, backend_pid, &mut handle).await
        }
    };
    let elapsed = started.elapsed();

    let (outcome, conn) = match joined {
        Ok((conn, Ok(report))) if !timed_out => (
            RunOutcome::Succeeded {
                run_id,
                report,
                elapsed,
            },
            Some(conn),
        ),
        Ok((conn, result)) => {
            let error = if timed_out {
                format!(
                    "timed out after {}s (jobs.{}.timeout) and was cancelled",
                    request.timeout.as_secs(),
                    kind.config_key()
                )
            } else {
                match result {
                    Err(e) => e.to_string(),
                    Ok(_) => "the run was interrupted".to_string(),
                }
            };
            (
                RunOutcome::Failed {
                    run_id,
                    error,
                    elapsed,
                },
                Some(conn),
            )
        }
        Err(join_error) => (
            RunOutcome::Failed {
                run_id,
                error: format!("the job panicked: {join_error}"),
                elapsed,
            },
            None,
        ),
    };

    if let Some(id) = run_id {
        record_outcome(&ctx, conn, kind, id, &outcome).await;
    }
    log_outcome(kind, &outcome);
    Ok(outcome)
}

fn begin_run(
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
    if !ledger::try_lock(conn, kind)? {
        let reason = match ledger::running_run(conn, kind)? {
            Some(holder) => format!(
                "job {} is already running: run {} ({} on {} pid {}, started {})",
                kind.name(),
                holder.id,
                holder.trigger,
                holder.host,
                holder.pid,
                holder.started_at.format("%Y-%m-%d %H:%M:%SZ")
            ),
            None => format!("job {} is locked by another process", kind.name()),
        };
        let id = ledger::insert_run(conn, &new_run(RunStatus::Skipped, Some(reason.clone())))?;
        return Ok(Start::Skipped(id, reason));
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

type JobHandle = tokio::task::JoinHandle<(PgConnection, Result<JobReport, crate::jobs::JobError>)>;

/// Cancels the run's statement on the server, again every second, until the job returns.
async fn cancel_until_done(
    ctx: &Arc<Ctx>,
    backend_pid: Option<i32>,
    handle: &mut JobHandle,
) -> Result<(PgConnection, Result<JobReport, crate::jobs::JobError>), tokio::task::JoinError> {
    loop {
        if let Some(pid) = backend_pid {
            let pool = ctx.pool.clone();
            let _ = tokio::task::spawn_blocking(move || {
                if let Ok(mut c) = pool.get() {
                    let _ = c.batch_execute(&format!("SELECT pg_cancel_backend({pid})"));
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
        _ => return,
    };
    let pool = ctx.pool.clone();
    let result = tokio::task::spawn_blocking(move || -> Result<(), DbError> {
        // The run's own connection still holds the lock; use it when it is healthy.
        if let Some(mut conn) = conn
            && ledger::finish_run(&mut conn, id, status, report.as_ref(), error.as_deref()).is_ok()
        {
            let _ = ledger::unlock(&mut conn, kind);
            return Ok(());
        }
        let mut conn = pool.get().map_err(|e| DbError::Unreachable {
            target: "the pool".into(),
            message: e.to_string(),
        })?;
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
        RunOutcome::Skipped { .. } | RunOutcome::AlreadyRan => {}
    }
}

/// Marks `running` rows of every job abandoned where no live process holds the job's lock.
pub fn sweep_abandoned(conn: &mut PgConnection) -> Result<usize, DbError> {
    let mut total = 0;
    for &kind in JobKind::ALL {
        if ledger::try_lock(conn, kind)? {
            total += ledger::mark_abandoned(conn, kind)?;
            ledger::unlock(conn, kind)?;
        }
    }
    Ok(total)
}

/// How often the daemon loop calls [`DaemonObserver::heartbeat`] while it is alive.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// Observes the daemon's life (systemd notifications, health): called from the loop.
pub trait DaemonObserver: Send + Sync {
    fn ready(&self) {}
    fn heartbeat(&self) {}
    fn status(&self, _text: &str) {}
    fn stopping(&self) {}
    /// A run started by this daemon ended (metrics).
    fn run_finished(&self, _kind: JobKind, _outcome: &RunOutcome) {}
}

/// An observer that does nothing.
pub struct NoObserver;
impl DaemonObserver for NoObserver {}

/// The daemon: waits for the database, sweeps abandoned runs, catches up missed ticks, then
/// runs jobs at their cron instants until `shutdown` completes; then stops starting jobs and
/// waits up to `scheduler.shutdown_grace` for running ones.
pub async fn run_daemon(
    ctx: Arc<Ctx>,
    observer: Arc<dyn DaemonObserver>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    tokio::pin!(shutdown);
    let identity = Identity::current();
    let plans: Vec<JobPlan> = ctx
        .settings
        .job_plans()
        .map_err(|e| DaemonError::Scheduler(e.to_string()))?
        .into_iter()
        .filter(|p| p.schedule.is_some())
        .collect();

    if !wait_for_database(&ctx, &observer, &mut shutdown).await {
        observer.stopping();
        return Ok(());
    }

    let (tx, mut rx) = mpsc::unbounded_channel::<JobKind>();
    let mut cron = JobScheduler::new()
        .await
        .map_err(|e| DaemonError::Scheduler(e.to_string()))?;
    for plan in &plans {
        let Some(schedule) = &plan.schedule else {
            continue;
        };
        let tx = tx.clone();
        let kind = plan.kind;
        let job = Job::new_async(schedule.six_field(), move |_, _| {
            let tx = tx.clone();
            Box::pin(async move {
                let _ = tx.send(kind);
            })
        })
        .map_err(|e| DaemonError::Scheduler(format!("job {}: {e}", kind.name())))?;
        cron.add(job)
            .await
            .map_err(|e| DaemonError::Scheduler(e.to_string()))?;
    }
    cron.start()
        .await
        .map_err(|e| DaemonError::Scheduler(e.to_string()))?;

    let running: Arc<Mutex<HashMap<u64, (JobKind, CancelFlag)>>> = Arc::default();
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut next_task_id = 0u64;
    let mut spawn_run = |tasks: &mut JoinSet<()>, request: RunRequest| {
        next_task_id += 1;
        let task_id = next_task_id;
        let running = running.clone();
        lock(&running).insert(task_id, (request.kind, request.opts.cancel.clone()));
        let ctx = ctx.clone();
        let identity = identity.clone();
        let observer = observer.clone();
        tasks.spawn(async move {
            let kind = request.kind;
            match execute(ctx, identity, request).await {
                Ok(outcome) => observer.run_finished(kind, &outcome),
                Err(e) => tracing::error!(job.name = kind.name(), error = %e, "job could not start; it runs again at its next tick"),
            }
            lock(&running).remove(&task_id);
        });
    };

    for request in catch_up_requests(&ctx, &plans, Utc::now()).await {
        spawn_run(&mut tasks, request);
    }

    observer.ready();
    tracing::info!(jobs = plans.len(), "scheduler started");
    let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(kind) = rx.recv() => {
                let now = Utc::now();
                let Some(plan) = plans.iter().find(|p| p.kind == kind) else { continue };
                let Some(tick) = plan.schedule.as_ref().and_then(|s| s.latest_at_or_before(now)) else { continue };
                spawn_run(&mut tasks, RunRequest {
                    kind,
                    trigger: Trigger::Cron,
                    scheduled_for: tick,
                    now,
                    opts: RunOpts::default(),
                    timeout: plan.timeout,
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = heartbeat.tick() => {
                observer.heartbeat();
                let names: Vec<&str> = lock(&running).values().map(|(k, _)| k.name()).collect();
                observer.status(&status_line(&names, &plans));
            }
        }
    }

    observer.stopping();
    let _ = cron.shutdown().await;
    let grace = ctx.settings.scheduler.shutdown_grace.0;
    if !tasks.is_empty() {
        tracing::info!(
            running = tasks.len(),
            grace_s = grace.as_secs(),
            "stopping: waiting for running jobs"
        );
    }
    let drained =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            "shutdown grace (scheduler.shutdown_grace) ran out; cancelling running jobs"
        );
        for (_, flag) in lock(&running).values() {
            flag.cancel();
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
    }
    tracing::info!("stopped");
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn status_line(running: &[&str], plans: &[JobPlan]) -> String {
    if !running.is_empty() {
        return format!("running {}", running.join(", "));
    }
    let now = Utc::now();
    plans
        .iter()
        .filter_map(|p| Some((p.schedule.as_ref()?.next_after(now)?, p.kind)))
        .min()
        .map_or_else(
            || "idle; no job enabled".into(),
            |(at, kind)| format!("idle; next: {} at {}", kind.name(), at.format("%H:%M:%SZ")),
        )
}

/// Waits until the database answers (and is migrated, when `database.migrate_on_start`),
/// retrying with backoff. Returns false when shutdown came first.
async fn wait_for_database(
    ctx: &Arc<Ctx>,
    observer: &Arc<dyn DaemonObserver>,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> bool {
    let mut delay = Duration::from_millis(500);
    loop {
        let ctx2 = ctx.clone();
        let attempt = tokio::task::spawn_blocking(move || prepare_database(&ctx2)).await;
        match attempt {
            Ok(Ok(())) => return true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "database not ready");
                observer.status(&format!("waiting for the database: {e}"));
            }
            Err(e) => tracing::error!(error = %e, "database check task failed"),
        }
        tokio::select! {
            _ = shutdown.as_mut() => return false,
            _ = tokio::time::sleep(delay) => {}
        }
        observer.heartbeat();
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// Connects, migrates when configured, and sweeps runs abandoned by crashed processes.
pub fn prepare_database(ctx: &Ctx) -> Result<(), DbError> {
    let mut conn = db::connect(&ctx.connection_url)?;
    if ctx.settings.database.migrate_on_start {
        let applied = db::run_migrations(&mut conn)?;
        if !applied.is_empty() {
            tracing::info!(migrations = ?applied, "migrations applied");
        }
    } else {
        let pending = db::pending_migrations(&mut conn)?;
        if !pending.is_empty() {
            return Err(DbError::Migration(format!(
                "{} migration(s) pending ({}); run `usage-worker --migrate` as the schema owner",
                pending.len(),
                pending.join(", ")
            )));
        }
    }
    sweep_abandoned(&mut conn)?;
    Ok(())
}

/// Jobs whose latest tick within `scheduler.catch_up_horizon` has no successful run: each
/// runs once (like systemd's `Persistent=true`), not once per missed tick.
pub async fn catch_up_requests(
    ctx: &Arc<Ctx>,
    plans: &[JobPlan],
    now: DateTime<Utc>,
) -> Vec<RunRequest> {
    let horizon = chrono::Duration::from_std(ctx.settings.scheduler.catch_up_horizon.0)
        .unwrap_or(chrono::Duration::days(7));
    let ticks: Vec<(JobPlan, DateTime<Utc>)> = plans
        .iter()
        .filter_map(|p| {
            let tick = p.schedule.as_ref()?.latest_at_or_before(now)?;
            (tick >= now - horizon).then(|| (p.clone(), tick))
        })
        .collect();
    let pool = ctx.pool.clone();
    let found = tokio::task::spawn_blocking(move || -> Result<Vec<RunRequest>, DbError> {
        let mut conn = pool.get().map_err(|e| DbError::Unreachable {
            target: "the pool".into(),
            message: e.to_string(),
        })?;
        let mut requests = Vec::new();
        for (plan, tick) in ticks {
            if !ledger::succeeded_since(&mut conn, plan.kind, tick)? {
                tracing::info!(job.name = plan.kind.name(), missed_tick = %tick, "catching up a missed run");
                requests.push(RunRequest {
                    kind: plan.kind,
                    trigger: Trigger::Catchup,
                    scheduled_for: tick,
                    now,
                    opts: RunOpts::default(),
                    timeout: plan.timeout,
                });
            }
        }
        Ok(requests)
    })
    .await;
    match found {
        Ok(Ok(requests)) => requests,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "catch-up check failed; missed runs wait for their next tick");
            Vec::new()
        }
        Err(e) => {
            tracing::error!(error = %e, "catch-up task failed");
            Vec::new()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("scheduler: {0}")]
    Scheduler(String),
    #[error(
        "metrics.listen: cannot listen on {address}: {message}; choose a free address or leave metrics.listen empty"
    )]
    Listen { address: String, message: String },
}
