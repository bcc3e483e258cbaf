//! The daemon loop: waits for the database, catches up, then starts a run at each job's cron
//! instant, reports its life to a [`DaemonObserver`], and drains running jobs at shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};

use super::catchup::{catch_up_requests, prepare_database};
use super::outcome::{DaemonError, RunOutcome, RunRequest};
use super::runner::execute;
use crate::config::JobPlan;
use crate::jobs::{CancelFlag, Ctx, JobKind, RunOpts};
use crate::ledger::{Identity, Trigger};

/// How often the daemon loop calls [`DaemonObserver::heartbeat`] while it is alive.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// How long running jobs get to return once cancelled at the end of the shutdown grace.
const CANCELLED_JOBS_GRACE: Duration = Duration::from_secs(10);

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
    let plans = enabled_plans(&ctx)?;
    if !wait_for_database(&ctx, &observer, &mut shutdown).await? {
        observer.stopping();
        return Ok(());
    }

    let (mut cron, mut ticks) = start_cron(&plans).await?;
    let mut runs = Runs::new(ctx.clone(), observer.clone());
    for request in catch_up_requests(&ctx, &plans, Utc::now()).await {
        runs.spawn(request);
    }

    observer.ready();
    tracing::info!(jobs = plans.len(), "scheduler started");
    let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(kind) = ticks.recv() => {
                if let Some(request) = cron_request(&plans, kind, Utc::now()) {
                    runs.spawn(request);
                }
            }
            Some(_) = runs.tasks.join_next(), if !runs.tasks.is_empty() => {}
            _ = heartbeat.tick() => {
                observer.heartbeat();
                observer.status(&status_line(&runs.running_names(), &plans));
            }
        }
    }

    observer.stopping();
    let _ = cron.shutdown().await;
    runs.drain(ctx.settings.scheduler.shutdown_grace.0).await;
    tracing::info!("stopped");
    Ok(())
}

/// The plans of the jobs that have a schedule.
fn enabled_plans(ctx: &Ctx) -> Result<Vec<JobPlan>, DaemonError> {
    let plans = ctx
        .settings
        .job_plans()
        .map_err(|e| DaemonError::Scheduler(e.to_string()))?;
    Ok(plans.into_iter().filter(|p| p.schedule.is_some()).collect())
}

/// Starts tokio-cron-scheduler with one wake-up per enabled job; each wake-up sends the job's
/// kind on the returned channel.
async fn start_cron(
    plans: &[JobPlan],
) -> Result<(JobScheduler, mpsc::UnboundedReceiver<JobKind>), DaemonError> {
    let failed = |e: JobSchedulerError| DaemonError::Scheduler(e.to_string());
    let (tx, rx) = mpsc::unbounded_channel::<JobKind>();
    let cron = JobScheduler::new().await.map_err(failed)?;
    for plan in plans {
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
        cron.add(job).await.map_err(failed)?;
    }
    cron.start().await.map_err(failed)?;
    Ok((cron, rx))
}

/// The run for a wake-up of `kind`: for its latest tick at or before `now`.
fn cron_request(plans: &[JobPlan], kind: JobKind, now: DateTime<Utc>) -> Option<RunRequest> {
    let plan = plans.iter().find(|p| p.kind == kind)?;
    let tick = plan.schedule.as_ref()?.latest_at_or_before(now)?;
    Some(RunRequest {
        kind,
        trigger: Trigger::Cron,
        scheduled_for: tick,
        at: None,
        opts: RunOpts::default(),
        timeout: plan.timeout,
    })
}

/// The runs this daemon started and has not yet seen end.
struct Runs {
    ctx: Arc<Ctx>,
    identity: Identity,
    observer: Arc<dyn DaemonObserver>,
    tasks: JoinSet<()>,
    /// By task number: what runs (for the status line) and how to cancel it (at shutdown).
    running: Arc<Mutex<HashMap<u64, (JobKind, CancelFlag)>>>,
    next_task: u64,
}

impl Runs {
    fn new(ctx: Arc<Ctx>, observer: Arc<dyn DaemonObserver>) -> Runs {
        Runs {
            ctx,
            identity: Identity::current(),
            observer,
            tasks: JoinSet::new(),
            running: Arc::default(),
            next_task: 0,
        }
    }

    fn spawn(&mut self, request: RunRequest) {
        self.next_task += 1;
        let task = self.next_task;
        let running = self.running.clone();
        lock(&running).insert(task, (request.kind, request.opts.cancel.clone()));
        let ctx = self.ctx.clone();
        let identity = self.identity.clone();
        let observer = self.observer.clone();
        self.tasks.spawn(async move {
            run_until_not_lost(ctx, identity, observer, request).await;
            lock(&running).remove(&task);
        });
    }

    fn running_names(&self) -> Vec<&'static str> {
        lock(&self.running)
            .values()
            .map(|(k, _)| k.name())
            .collect()
    }

    /// Waits up to `grace` for the running jobs; then cancels them and waits a little more.
    async fn drain(mut self, grace: Duration) {
        if !self.tasks.is_empty() {
            tracing::info!(
                running = self.tasks.len(),
                grace_s = grace.as_secs(),
                "stopping: waiting for running jobs"
            );
        }
        if tokio::time::timeout(grace, self.join_all()).await.is_ok() {
            return;
        }
        tracing::warn!(
            "shutdown grace (scheduler.shutdown_grace) ran out; cancelling running jobs"
        );
        for (_, flag) in lock(&self.running).values() {
            flag.cancel();
        }
        let _ = tokio::time::timeout(CANCELLED_JOBS_GRACE, self.join_all()).await;
    }

    async fn join_all(&mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// How often a run that lost its database is repeated before its next tick has to do.
const LOST_RUN_ATTEMPTS: u32 = 8;
/// The pause before the first repetition; it doubles up to [`LOST_RUN_MAX_PAUSE`].
const LOST_RUN_FIRST_PAUSE: Duration = Duration::from_secs(2);
const LOST_RUN_MAX_PAUSE: Duration = Duration::from_secs(30);

/// Runs `request`; while the run loses its database (a failover, a broken connection), repeats
/// it for the same tick with growing pauses, so a failover costs a delay and never the run.
async fn run_until_not_lost(
    ctx: Arc<Ctx>,
    identity: Identity,
    observer: Arc<dyn DaemonObserver>,
    request: RunRequest,
) {
    let kind = request.kind;
    let mut pause = LOST_RUN_FIRST_PAUSE;
    for attempt in 1..=LOST_RUN_ATTEMPTS {
        match execute(ctx.clone(), identity.clone(), request.clone()).await {
            Ok(outcome) => {
                observer.run_finished(kind, &outcome);
                if !matches!(outcome, RunOutcome::Lost { .. }) {
                    return;
                }
            }
            Err(e) if attempt == 1 => {
                tracing::error!(job.name = kind.name(), error = %e, "job could not start; it runs again at its next tick");
                return;
            }
            Err(e) => {
                tracing::warn!(job.name = kind.name(), error = %e, "the database is not back yet")
            }
        }
        if attempt == LOST_RUN_ATTEMPTS {
            tracing::error!(
                job.name = kind.name(),
                attempts = attempt,
                "the run kept losing its database; it runs again at its next tick"
            );
            return;
        }
        let until = tokio::time::Instant::now() + pause;
        while tokio::time::Instant::now() < until {
            if request.opts.cancel.is_cancelled() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        tracing::info!(
            job.name = kind.name(),
            attempt = attempt + 1,
            "repeating the run that lost its database"
        );
        pause = (pause * 2).min(LOST_RUN_MAX_PAUSE);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
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
/// retrying with backoff. Returns false when shutdown came first, and an error when the
/// database is one the daemon must not run on (a transaction-mode pooler).
async fn wait_for_database(
    ctx: &Arc<Ctx>,
    observer: &Arc<dyn DaemonObserver>,
    shutdown: &mut Pin<&mut impl Future<Output = ()>>,
) -> Result<bool, DaemonError> {
    let mut delay = Duration::from_millis(500);
    loop {
        let ctx2 = ctx.clone();
        let attempt = tokio::task::spawn_blocking(move || prepare_database(&ctx2)).await;
        match attempt {
            Ok(Ok(_)) => return Ok(true),
            Ok(Err(e)) if e.is_configuration() => return Err(e.into()),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "database not ready");
                observer.status(&format!("waiting for the database: {e}"));
            }
            Err(e) => tracing::error!(error = %e, "database check task failed"),
        }
        tokio::select! {
            _ = shutdown.as_mut() => return Ok(false),
            _ = tokio::time::sleep(delay) => {}
        }
        observer.heartbeat();
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}
