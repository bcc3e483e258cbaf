//! Runs that can be trusted after a crash and across daemons: a `kill -9` never leaves a job
//! locked for the next run, a session whose client died ends its statement within seconds, and
//! a cron tick runs exactly once even when the daemon that lost the lock race writes first.

use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use usage_worker::config::SchemaName;
use usage_worker::db::{self, ADVISORY_LOCK_CLASS};
use usage_worker::jobs::{JobKind, RunOpts};
use usage_worker::ledger::{Identity, Trigger};
use usage_worker::scheduler::{self, NoObserver, RunOutcome, RunRequest};

use crate::support::{self, TestDb};

/// A run of `partitions` for `trigger` at `scheduled_for`, allowed `timeout`.
fn partitions_run(trigger: Trigger, scheduled_for: DateTime<Utc>, timeout: Duration) -> RunRequest {
    RunRequest {
        kind: JobKind::Partitions,
        trigger,
        scheduled_for,
        at: None,
        opts: RunOpts::default(),
        timeout,
    }
}

/// A session holding `partitions`' advisory lock, as a run of it does, and its server process.
fn hold_partitions_lock(db: &TestDb) -> (PgConnection, i64) {
    let mut holder = db.conn();
    holder
        .batch_execute(&format!(
            "SELECT pg_advisory_lock({ADVISORY_LOCK_CLASS}, {})",
            JobKind::Partitions.lock_id()
        ))
        .expect("take the partitions lock");
    let backend = support::count(&mut holder, "SELECT pg_backend_pid()::bigint AS n")
        .expect("read the holder's backend pid");
    (holder, backend)
}

/// The id of a process that has ended (and been reaped).
fn ended_pid() -> i32 {
    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("start `true`");
    child.wait().expect("reap `true`");
    child.id() as i32
}

/// Records a `running` row of `partitions` for `scheduled_for`, as a run on this host with
/// process id `pid` does right after taking the lock.
fn record_running(db: &TestDb, trigger: Trigger, scheduled_for: DateTime<Utc>, pid: i32) {
    diesel::sql_query(
        "INSERT INTO job_runs (job, trigger, scheduled_for, status, host, pid)
         VALUES ('partitions', $1, $2, 'running', $3, $4)",
    )
    .bind::<diesel::sql_types::Text, _>(trigger.as_str())
    .bind::<diesel::sql_types::Timestamptz, _>(scheduled_for)
    .bind::<diesel::sql_types::Text, _>(Identity::current().host)
    .bind::<diesel::sql_types::Integer, _>(pid)
    .execute(&mut db.conn())
    .expect("record a running run");
}

/// Whether a run's session (neither the lock holder's nor the caller's) has gone past setting
/// itself up, i.e. has tried the job's lock: its latest statement is no longer a `SET`.
fn a_run_tried_the_lock(db: &TestDb, holder_backend: i64) -> bool {
    db.count(&format!(
        "SELECT count(*) AS n FROM pg_stat_activity
          WHERE datname = current_database() AND backend_type = 'client backend'
            AND pid NOT IN (pg_backend_pid(), {holder_backend})
            AND query <> '' AND query NOT LIKE 'SET %'"
    )) > 0
}

fn a_tick() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(0) - chrono::Duration::seconds(1)
}

#[test]
fn pool_and_run_connections_check_for_a_vanished_client_every_two_seconds() {
    let db = TestDb::new();
    let show = "SHOW client_connection_check_interval";
    #[derive(QueryableByName)]
    struct Setting {
        #[diesel(sql_type = diesel::sql_types::Text)]
        client_connection_check_interval: String,
    }
    let mut direct = db::connect(&db.url).unwrap();
    let setting: Setting = diesel::sql_query(show).get_result(&mut direct).unwrap();
    assert_eq!(setting.client_connection_check_interval, "2s");
    let pool = db::build_pool(&db.url, 1, Duration::from_secs(5), &SchemaName::default());
    let mut pooled = db::checkout(&pool, &db.url).unwrap();
    let setting: Setting = diesel::sql_query(show).get_result(&mut pooled).unwrap();
    assert_eq!(setting.client_connection_check_interval, "2s");
    // The pool's one customizer sets the worker's schema as well.
    assert_eq!(
        support::text(&mut pooled, "SELECT current_schema()::text AS t"),
        "usage"
    );
}

fn run_partitions(db: &TestDb) -> Child {
    support::binary()
        .args(["--run", "partitions"])
        .env("USAGE_WORKER__DATABASE__URL", &db.url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start usage-worker --run partitions")
}

#[test]
fn a_rerun_right_after_kill_9_mid_statement_waits_for_the_orphaned_session_and_succeeds() {
    let db = TestDb::new();
    let blocker = db.block_partitions_job();
    let mut killed = run_partitions(&db);
    // The run holds the job's lock and its statement waits for the blocker's table lock.
    let waiting = "SELECT count(*) AS n FROM pg_stat_activity
                    WHERE datname = current_database() AND wait_event_type = 'Lock'";
    assert_eq!(db.wait_for_count(waiting, 1, Duration::from_secs(60)), 1);
    killed.kill().expect("SIGKILL usage-worker");
    killed.wait().unwrap();
    let dead_pid = killed.id();

    let rerun = run_partitions(&db);
    let rerun_pid = rerun.id();
    // The blocker stays until the rerun holds the job, so the orphan cannot finish on its own.
    db.wait_for_running_pid(rerun_pid);
    drop(blocker);
    let stderr = support::rerun_succeeded(rerun).stderr;
    assert!(
        stderr.contains("ended process") && stderr.contains(&format!("pid {dead_pid}")),
        "the wait for the ended process's session is not logged:\n{stderr}"
    );
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) AS n FROM job_runs
              WHERE status = 'abandoned' AND pid = {dead_pid} AND error LIKE '%pid {dead_pid}%'"
        )),
        1,
        "the killed run is not shown abandoned"
    );
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) AS n FROM job_runs WHERE status = 'succeeded' AND pid = {rerun_pid}"
        )),
        1
    );
    assert_eq!(
        db.count("SELECT count(*) AS n FROM job_runs WHERE status = 'skipped'"),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_finding_its_job_held_by_an_ended_process_waits_for_the_lock_then_runs() {
    let db = TestDb::new();
    let (orphan, orphan_backend) = hold_partitions_lock(&db);
    let dead_pid = ended_pid();
    record_running(&db, Trigger::Manual, Utc::now(), dead_pid);

    let run = tokio::spawn(scheduler::execute(
        db.ctx(),
        Identity::current(),
        partitions_run(Trigger::Manual, Utc::now(), Duration::from_secs(60)),
    ));
    assert!(support::wait_until(Duration::from_secs(10), || {
        a_run_tried_the_lock(&db, orphan_backend)
    }));
    // PostgreSQL ends the orphaned session: its lock goes with it.
    drop(orphan);
    let outcome = run.await.unwrap().unwrap();
    assert!(
        matches!(outcome, RunOutcome::Succeeded { .. }),
        "{outcome:?}"
    );
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) AS n FROM job_runs WHERE status = 'abandoned' AND pid = {dead_pid}"
        )),
        1
    );
    assert_eq!(
        db.count("SELECT count(*) AS n FROM job_runs WHERE status = 'skipped'"),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_ended_holder_keeps_the_lock_past_its_timeout_is_skipped_saying_so() {
    let db = TestDb::new();
    let _orphan = hold_partitions_lock(&db);
    let dead_pid = ended_pid();
    record_running(&db, Trigger::Manual, Utc::now(), dead_pid);

    let outcome = scheduler::execute(
        db.ctx(),
        Identity::current(),
        partitions_run(Trigger::Manual, Utc::now(), Duration::from_secs(2)),
    )
    .await
    .unwrap();
    let RunOutcome::Skipped { reason, .. } = outcome else {
        panic!("expected skipped, got {outcome:?}");
    };
    assert!(!reason.contains("already running"), "{reason}");
    assert!(reason.contains("ended process"), "{reason}");
    assert!(reason.contains(&format!("pid {dead_pid}")), "{reason}");
    assert!(reason.contains("within 2s"), "{reason}");
    assert!(reason.contains("pg_terminate_backend"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skipped_row_recorded_first_for_a_tick_does_not_stop_the_tick_from_running() {
    let db = TestDb::new();
    let tick = a_tick();
    // Daemon B found the lock busy and wrote `skipped` before daemon A recorded its run.
    diesel::sql_query(
        "INSERT INTO job_runs (job, trigger, scheduled_for, status, host, pid, finished_at, error)
         VALUES ('partitions', 'cron', $1, 'skipped', 'b-host', 1, now(), 'locked')",
    )
    .bind::<diesel::sql_types::Timestamptz, _>(tick)
    .execute(&mut db.conn())
    .unwrap();
    let outcome = scheduler::execute(
        db.ctx(),
        Identity::current(),
        partitions_run(Trigger::Cron, tick, Duration::from_secs(60)),
    )
    .await
    .unwrap();
    assert!(
        matches!(outcome, RunOutcome::Succeeded { .. }),
        "the tick was lost: {outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_losing_the_lock_before_the_winner_records_the_tick_records_nothing() {
    let db = TestDb::new();
    let tick = a_tick();
    // Daemon A has taken the lock for the tick but not yet written its row.
    let (winner, winner_backend) = hold_partitions_lock(&db);
    let loser = tokio::spawn(scheduler::execute(
        db.ctx(),
        Identity::current(),
        partitions_run(Trigger::Cron, tick, Duration::from_secs(60)),
    ));
    assert!(support::wait_until(Duration::from_secs(10), || {
        a_run_tried_the_lock(&db, winner_backend)
    }));
    record_running(&db, Trigger::Cron, tick, std::process::id() as i32);
    let outcome = loser.await.unwrap().unwrap();
    assert!(
        matches!(outcome, RunOutcome::AlreadyRan),
        "the loser should leave the tick to the winner: {outcome:?}"
    );
    drop(winner);
    assert_eq!(
        db.count("SELECT count(*) AS n FROM job_runs WHERE status = 'skipped'"),
        0,
        "a tick that ran is recorded skipped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_finding_the_other_running_the_same_tick_records_nothing() {
    let db = TestDb::new();
    let ctx = db.ctx();
    let tick = a_tick();
    let blocker = db.block_partitions_job();
    let first = tokio::spawn(scheduler::execute(
        ctx.clone(),
        Identity::current(),
        partitions_run(Trigger::Cron, tick, Duration::from_secs(60)),
    ));
    db.wait_for_count(
        "SELECT count(*) AS n FROM job_runs WHERE status = 'running'",
        1,
        Duration::from_secs(10),
    );
    let second = scheduler::execute(
        ctx,
        Identity::current(),
        partitions_run(Trigger::Cron, tick, Duration::from_secs(60)),
    )
    .await
    .unwrap();
    assert!(matches!(second, RunOutcome::AlreadyRan), "{second:?}");
    drop(blocker);
    let first = first.await.unwrap().unwrap();
    assert!(matches!(first, RunOutcome::Succeeded { .. }), "{first:?}");
    assert_eq!(
        db.count("SELECT count(*) AS n FROM job_runs"),
        1,
        "only the run of the tick is recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_only_skipped_is_caught_up_at_the_next_start() {
    let db = TestDb::new();
    let ctx = db.ctx_with(|settings| support::only_partitions(settings, "0 2 * * *"));
    let plans = support::scheduled_plans(&ctx.settings);
    let tick = plans[0]
        .schedule
        .as_ref()
        .and_then(|s| s.latest_at_or_before(Utc::now()))
        .unwrap();
    diesel::sql_query(
        "INSERT INTO job_runs (job, trigger, scheduled_for, status, host, pid, finished_at, error)
         VALUES ('partitions', 'cron', $1, 'skipped', 'h', 1, $1, 'locked')",
    )
    .bind::<diesel::sql_types::Timestamptz, _>(tick)
    .execute(&mut db.conn())
    .unwrap();

    let requests = scheduler::catch_up_requests(&ctx, &plans, Utc::now()).await;
    assert_eq!(requests.len(), 1, "the skipped tick is not caught up");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(scheduler::run_daemon(
        ctx.clone(),
        Arc::new(NoObserver),
        async move {
            let _ = stop_rx.await;
        },
    ));
    let caught_up = "SELECT count(*) AS n FROM job_runs
                      WHERE trigger = 'catchup' AND status = 'succeeded'";
    let found = db.wait_for_count(caught_up, 1, Duration::from_secs(30));
    stop_tx.send(()).unwrap();
    daemon.await.unwrap().unwrap();
    assert_eq!(found, 1, "the skipped tick was not run by catch-up");
}
