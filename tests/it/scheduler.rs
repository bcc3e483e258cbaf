//! The scheduler and run ledger: one run per tick across daemons, abandoned runs, catch-up,
//! graceful shutdown, timeouts and overlap between manual and scheduled runs.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use diesel::prelude::*;
use tokio::sync::Notify;
use usage_worker::config::HumanDuration;
use usage_worker::jobs::{Ctx, JobKind, RunOpts};
use usage_worker::ledger::{Identity, Trigger};
use usage_worker::scheduler::{self, DaemonObserver, NoObserver, RunOutcome, RunRequest};

use crate::support::{TestDb, only_partitions, scheduled_plans};

/// Wakes the test when the daemon is ready (its catch-up runs started) and when it stops.
#[derive(Default)]
struct Signals {
    ready: Notify,
    stopping: Notify,
}

impl DaemonObserver for Signals {
    fn ready(&self) {
        self.ready.notify_one();
    }

    fn stopping(&self) {
        self.stopping.notify_one();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_daemons_on_one_database_run_each_tick_once() {
    let db = TestDb::new();
    let ctx = db.ctx_with(|s| only_partitions(s, "* * * * * *"));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let daemon = |ctx: Arc<Ctx>| {
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            scheduler::run_daemon(ctx, Arc::new(NoObserver), async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
        })
    };
    let first = daemon(ctx.clone());
    let second = daemon(db.ctx_with(|s| only_partitions(s, "* * * * * *")));
    let ticks_run = "SELECT count(DISTINCT scheduled_for) AS n FROM job_runs
                      WHERE job = 'partitions' AND trigger IN ('cron', 'catchup')";
    db.wait_for_count(ticks_run, 4, Duration::from_secs(30));
    stop_tx.send(true).unwrap();
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();

    let ticks = db.count(ticks_run);
    let seconds = db.count(
        "SELECT extract(epoch FROM max(scheduled_for) - min(scheduled_for))::bigint + 1 AS n
           FROM job_runs WHERE job = 'partitions' AND trigger IN ('cron', 'catchup')",
    );
    assert!(
        ticks >= 4 && ticks + 1 >= seconds,
        "expected a run for most of the ticks, got {ticks} over {seconds} ticks"
    );
    let doubled = db.count(
        "SELECT count(*) AS n FROM (
             SELECT scheduled_for FROM job_runs
              WHERE job = 'partitions' AND trigger IN ('cron', 'catchup')
              GROUP BY scheduled_for HAVING count(*) > 1) AS t",
    );
    assert_eq!(doubled, 0, "a tick ran more than once");
    assert_eq!(
        db.count("SELECT count(*) AS n FROM job_runs WHERE status IN ('running', 'failed')"),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_left_running_by_a_crash_becomes_abandoned_but_a_live_one_does_not() {
    let db = TestDb::new();
    db.execute(
        "INSERT INTO job_runs (job, trigger, scheduled_for, status, host, pid)
         VALUES ('partitions', 'cron', '2026-11-01T02:00:00Z', 'running', 'crashed-host', 4242)",
    );
    let ctx = db.ctx();
    scheduler::prepare_database(&ctx).unwrap();
    assert_eq!(
        db.count(
            "SELECT count(*) AS n FROM job_runs
              WHERE status = 'abandoned' AND finished_at IS NOT NULL
                AND error LIKE '%crashed-host pid 4242%'"
        ),
        1
    );

    // A run whose process still holds the job's lock is alive: it stays running.
    let blocker = db.block_partitions_job();
    let runner = tokio::spawn(scheduler::execute(
        ctx.clone(),
        Identity::current(),
        manual_request(Duration::from_secs(60)),
    ));
    assert_eq!(
        db.wait_for_count(
            "SELECT count(*) AS n FROM job_runs WHERE status = 'running'",
            1,
            Duration::from_secs(10)
        ),
        1
    );
    scheduler::prepare_database(&ctx).unwrap();
    assert_eq!(
        db.count("SELECT count(*) AS n FROM job_runs WHERE status = 'running'"),
        1
    );
    drop(blocker);
    let outcome = runner.await.unwrap().unwrap();
    assert!(
        matches!(outcome, RunOutcome::Succeeded { .. }),
        "{outcome:?}"
    );
}

fn manual_request(timeout: Duration) -> RunRequest {
    RunRequest {
        kind: JobKind::Partitions,
        trigger: Trigger::Manual,
        scheduled_for: Utc::now(),
        at: None,
        opts: RunOpts::default(),
        timeout,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_three_days_of_downtime_catch_up_runs_a_job_once() {
    let db = TestDb::new();
    // Daily at 02:00; the last success was four days ago, so three ticks were missed.
    let ctx = db.ctx_with(|s| only_partitions(s, "0 2 * * *"));
    let plans = scheduled_plans(&ctx.settings);
    let schedule = plans
        .iter()
        .find(|p| p.kind == JobKind::Partitions)
        .and_then(|p| p.schedule.clone())
        .unwrap();
    let now = Utc::now();
    let latest = schedule.latest_at_or_before(now).unwrap();
    let four_days_before = latest - chrono::Duration::days(3);
    diesel::sql_query(
        "INSERT INTO job_runs (job, trigger, scheduled_for, started_at, finished_at, status, host, pid)
         VALUES ('partitions', 'cron', $1, $1, $1, 'succeeded', 'h', 1)",
    )
    .bind::<diesel::sql_types::Timestamptz, _>(four_days_before)
    .execute(&mut db.conn())
    .unwrap();

    let requests = scheduler::catch_up_requests(&ctx, &plans, now).await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].scheduled_for, latest);
    assert_eq!(requests[0].trigger, Trigger::Catchup);

    for _ in 0..2 {
        // Stopped as soon as it is ready, i.e. has started its catch-up runs; shutdown waits
        // for them.
        let signals = Arc::new(Signals::default());
        let ready = signals.clone();
        scheduler::run_daemon(
            ctx.clone(),
            signals,
            async move { ready.ready.notified().await },
        )
        .await
        .unwrap();
    }
    assert_eq!(
        db.count(
            "SELECT count(*) AS n FROM job_runs WHERE trigger = 'catchup' AND status = 'succeeded'"
        ),
        1,
        "catch-up must run once, not once per missed tick nor once per start"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_ignores_ticks_older_than_the_horizon() {
    let db = TestDb::new();
    let ctx = db.ctx_with(|s| {
        only_partitions(s, "30 3 1 * *");
        s.scheduler.catch_up_horizon = HumanDuration(Duration::from_secs(3_600));
    });
    let now = chrono::DateTime::parse_from_rfc3339("2027-01-20T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let plans = scheduled_plans(&ctx.settings);
    assert!(
        scheduler::catch_up_requests(&ctx, &plans, now)
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_a_running_job_to_finish() {
    let db = TestDb::new();
    let ctx = db.ctx_with(|s| only_partitions(s, "* * * * * *"));
    let blocker = db.block_partitions_job();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let signals = Arc::new(Signals::default());
    let mut daemon = tokio::spawn(scheduler::run_daemon(
        ctx.clone(),
        signals.clone(),
        async move {
            let _ = stop_rx.await;
        },
    ));
    assert_eq!(
        db.wait_for_count(
            "SELECT count(*) AS n FROM job_runs WHERE status = 'running'",
            1,
            Duration::from_secs(10)
        ),
        1
    );
    stop_tx.send(()).unwrap();
    signals.stopping.notified().await;
    // The daemon has seen the stop and its job cannot finish while blocked: one that did not
    // wait would be gone well within this time (the grace period is 30 s).
    let exited = tokio::time::timeout(Duration::from_millis(1_500), &mut daemon).await;
    assert!(exited.is_err(), "the daemon exited under a running job");
    drop(blocker);
    daemon.await.unwrap().unwrap();
    assert_eq!(
        db.count("SELECT count(*) AS n FROM job_runs WHERE status = 'succeeded'"),
        1
    );
    assert_eq!(
        db.count("SELECT count(*) AS n FROM job_runs WHERE status <> 'succeeded'"),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_timeout_is_cancelled_on_the_server_and_recorded_failed() {
    let db = TestDb::new();
    let ctx = db.ctx();
    let _blocker = db.block_partitions_job();
    // The job waits on a lock that is never released: only a server-side cancel ends it.
    let outcome = scheduler::execute(
        ctx,
        Identity::current(),
        manual_request(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    match outcome {
        RunOutcome::Failed { error, .. } => {
            assert!(error.contains("timed out"), "{error}");
            assert!(error.contains("jobs.partitions.timeout"), "{error}");
        }
        other => panic!("expected failure, got {other:?}"),
    }
    assert_eq!(
        db.count(
            "SELECT count(*) AS n FROM job_runs
              WHERE status = 'failed' AND error LIKE '%timed out%' AND finished_at IS NOT NULL"
        ),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_run_while_the_job_runs_elsewhere_is_skipped_naming_the_holder() {
    let db = TestDb::new();
    let ctx = db.ctx();
    let blocker = db.block_partitions_job();
    let first = tokio::spawn(scheduler::execute(
        ctx.clone(),
        Identity::current(),
        manual_request(Duration::from_secs(60)),
    ));
    db.wait_for_count(
        "SELECT count(*) AS n FROM job_runs WHERE status = 'running'",
        1,
        Duration::from_secs(10),
    );
    let second = scheduler::execute(
        ctx.clone(),
        Identity::current(),
        manual_request(Duration::from_secs(60)),
    )
    .await
    .unwrap();
    match second {
        RunOutcome::Skipped { reason, .. } => {
            assert!(reason.contains("already running: run"), "{reason}");
            assert!(reason.contains(&Identity::current().host), "{reason}");
        }
        other => panic!("expected skipped, got {other:?}"),
    }
    drop(blocker);
    assert!(matches!(
        first.await.unwrap().unwrap(),
        RunOutcome::Succeeded { .. }
    ));
    assert_eq!(
        db.count("SELECT count(*) AS n FROM job_runs WHERE status = 'skipped'"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_changes_nothing_and_writes_no_ledger_row() {
    let db = TestDb::new();
    let mut request = manual_request(Duration::from_secs(60));
    request.opts.dry_run = true;
    let outcome = scheduler::execute(db.ctx(), Identity::current(), request)
        .await
        .unwrap();
    assert!(matches!(outcome, RunOutcome::Succeeded { .. }));
    assert_eq!(db.count("SELECT count(*) AS n FROM job_runs"), 0);
    assert_eq!(
        db.count(
            "SELECT count(*) AS n FROM pg_inherits WHERE inhparent = 'usage_events'::regclass"
        ),
        1,
        "only the default partition may exist"
    );
}
