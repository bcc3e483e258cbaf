//! The real binary killed with SIGKILL in the middle of `aggregate` on a backlog, then run
//! again at once: the killed run shows `abandoned`, the next run completes, and the daily
//! summary equals the raw sums of the events below the watermark exactly.
//!
//! The tests of this file run alone on their cluster ([`TestDb::alone`]): a transaction open
//! anywhere in the cluster holds the aggregation watermark back (xids are cluster-wide).

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;

use crate::support::books::{events_not_yet_aggregated, summary_differences};
use crate::support::{self, TestDb};

/// `users` users in UTC and `events` events over the first 20 days of November 2026, written
/// by 100 transactions (so the backlog spans many xids, as real traffic does).
fn backlog(db: &TestDb, users: i64, events: i64) {
    db.execute(&format!(
        "INSERT INTO users (id, email, timezone)
         SELECT u, 'user' || u || '@example.com', 'UTC' FROM generate_series(1, {users}) AS u"
    ));
    let per_transaction = events / 100;
    db.execute(&format!(
        "DO $$
         BEGIN
             FOR t IN 0..99 LOOP
                 INSERT INTO usage_events (user_id, kind, model, tokens, prompt_tokens,
                                           completion_tokens, messages, bytes, cost, created_at)
                 SELECT 1 + n % {users}, (ARRAY['ai_response', 'message_sent'])[1 + n % 2],
                        'm' || n % 3, n % 1000, n % 600, n % 400, n % 2, n % 5000,
                        (n % 9) * 0.00123,
                        '2026-11-01T00:00:00Z'::timestamptz + (n % 1728000) * interval '1 second'
                   FROM generate_series(t * {per_transaction}, (t + 1) * {per_transaction} - 1) AS n;
                 COMMIT;
             END LOOP;
         END $$"
    ));
}

const AGGREGATED: &str = "SELECT coalesce(sum(events), 0)::bigint AS n FROM token_usage_daily";

fn aggregate(db: &TestDb, batch_events: i64) -> Child {
    support::binary()
        .args(["--run", "aggregate"])
        .env("USAGE_WORKER__DATABASE__URL", &db.url)
        .env(
            "USAGE_WORKER__AGGREGATE__BATCH_EVENTS",
            batch_events.to_string(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start usage-worker --run aggregate")
}

/// Where the kill lands once the first batch has committed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KillAt {
    /// Wherever the run is: between or inside a batch's statements.
    Anywhere,
    /// At the start of the next batch, whose statement waits for the watermark row the test
    /// holds: the killed session is inside a statement however fast the machine is, and stays
    /// there unless PostgreSQL ends it.
    WaitingForTheWatermark,
}

/// Kills `aggregate` once part of the backlog is committed, runs it again at once, and checks
/// the books. Returns the events aggregated when it was killed.
fn killed_mid_run_then_rerun(events: i64, batch_events: i64, kill_at: KillAt) -> i64 {
    let db = TestDb::alone();
    backlog(&db, 1000, events);

    let mut child = aggregate(&db, batch_events);
    let deadline = Instant::now() + Duration::from_secs(600);
    let at_kill = loop {
        let done = db.count(AGGREGATED);
        if done > 0 {
            break done;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("aggregate finished ({status}) before it could be killed");
        }
        assert!(Instant::now() < deadline, "aggregate made no progress");
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut watermark_holder = None;
    if kill_at == KillAt::WaitingForTheWatermark {
        let mut holder = db.conn();
        holder
            .batch_execute("BEGIN; SELECT xid FROM aggregation_watermark FOR UPDATE")
            .unwrap();
        watermark_holder = Some(holder);
        let waiting = "SELECT count(*) AS n FROM pg_stat_activity
                        WHERE datname = current_database() AND wait_event_type = 'Lock'";
        assert_eq!(db.wait_for_count(waiting, 1, Duration::from_secs(60)), 1);
    }
    child.kill().expect("SIGKILL usage-worker");
    child.wait().unwrap();
    let at_kill = at_kill.max(db.count(AGGREGATED));
    assert!(
        at_kill < events,
        "the whole backlog was done before the kill"
    );
    assert_eq!(
        summary_differences(&db),
        0,
        "books differ right after the kill"
    );

    // Rerun at once, as an operator would: the killed run's session may still be inside its
    // statement and hold the job's lock; the rerun waits for PostgreSQL to end that session.
    let rerun_started = Instant::now();
    let rerun = aggregate(&db, batch_events);
    if let Some(holder) = watermark_holder {
        // Released once the rerun holds the job, so the killed session could not end by itself.
        db.wait_for_running_pid(rerun.id());
        drop(holder);
    }
    let stderr = support::rerun_succeeded(rerun).stderr;
    eprintln!(
        "rerun succeeded after {:.1}s; it {}",
        rerun_started.elapsed().as_secs_f64(),
        if stderr.contains("ended process") {
            "waited for the killed session to end"
        } else {
            "found the job's lock free"
        }
    );
    assert!(
        !stderr.contains("@example.com"),
        "an email address was logged: {stderr}"
    );
    assert_eq!(
        db.count(
            "SELECT count(*) AS n FROM job_runs WHERE job = 'aggregate' AND status = 'abandoned'"
        ),
        1,
        "the killed run is not shown abandoned"
    );
    assert_eq!(
        db.count(
            "SELECT count(*) AS n FROM job_runs WHERE job = 'aggregate' AND status = 'succeeded'"
        ),
        1
    );
    assert_eq!(
        events_not_yet_aggregated(&db),
        0,
        "events left below no watermark after the rerun"
    );
    assert_eq!(db.count(AGGREGATED), events, "events lost or doubled");
    assert_eq!(
        summary_differences(&db),
        0,
        "summary differs from the raw sums"
    );
    at_kill
}

/// Killed while its next batch waits for the watermark row, so the killed session is
/// certainly inside a statement when the rerun starts.
#[test]
fn aggregate_killed_mid_run_on_200k_events_is_abandoned_and_an_immediate_rerun_conserves_every_event()
 {
    let at_kill = killed_mid_run_then_rerun(200_000, 10_000, KillAt::WaitingForTheWatermark);
    eprintln!("killed after {at_kill} of 200000 events");
}

/// A million events in batches of 200,000, killed wherever the run is once the
/// first batch has committed (its statements are short, so the killed session has often ended
/// before the rerun looks); run with
/// `cargo test --test it -- --ignored --nocapture crash::`.
#[test]
#[ignore]
fn aggregate_killed_mid_run_on_a_million_events_is_abandoned_and_an_immediate_rerun_conserves_every_event()
 {
    let at_kill = killed_mid_run_then_rerun(1_000_000, 200_000, KillAt::Anywhere);
    eprintln!("killed after {at_kill} of 1000000 events");
}

/// A user whose zone PostgreSQL does not know: counted in UTC and named in the report, and
/// the other users' days and periods are those of their own zones.
#[test]
fn a_user_in_zone_mars_olympus_is_counted_in_utc_and_reported_and_others_are_unaffected() {
    let db = TestDb::alone();
    db.execute(
        "INSERT INTO users (id, email, timezone) VALUES
             (1, 'm@example.com', 'Mars/Olympus'), (2, 'b@example.com', 'Europe/Berlin');
         -- 23:30 UTC on 9 November: the 9th in UTC, the 10th in Berlin.
         INSERT INTO usage_events (user_id, kind, tokens, created_at)
         SELECT u, 'ai_response', 10, '2026-11-09T23:30:00Z' FROM generate_series(1, 2) AS u;",
    );
    let out = support::binary()
        .args([
            "--run",
            "aggregate,reset-daily,reset-monthly",
            "--at",
            "2026-11-10T12:00:00Z",
        ])
        .env("USAGE_WORKER__DATABASE__URL", &db.url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(
        db.count("SELECT count(*) AS n FROM token_usage_daily WHERE user_id = 1 AND day = '2026-11-09' AND tokens = 10"),
        1,
        "the unknown zone is not counted in UTC"
    );
    assert_eq!(
        db.count("SELECT count(*) AS n FROM token_usage_daily WHERE user_id = 2 AND day = '2026-11-10' AND tokens = 10"),
        1,
        "Berlin's day is wrong"
    );
    assert_eq!(
        db.count(
            "SELECT count(*) AS n FROM usage_periods WHERE user_id = 1 AND period = 'day'
                   AND period_start = '2026-11-10T00:00:00Z' AND status = 'open'"
        ),
        1,
        "the unknown zone's day period is not the UTC day"
    );
    assert_eq!(
        db.count(
            "SELECT count(*) AS n FROM usage_periods WHERE user_id = 2 AND period = 'day'
                   AND period_start = '2026-11-09T23:00:00Z' AND status = 'open'"
        ),
        1,
        "Berlin's day period is wrong"
    );
    assert!(
        stdout.contains("1 user(s) with an unknown time zone counted in UTC"),
        "{stdout}"
    );
    assert!(
        stderr.contains("unknown time zone")
            && stderr.contains("user.id=1")
            && stderr.contains("Mars/Olympus")
            && !stderr.contains("user.id=2"),
        "{stderr}"
    );
    assert!(!stderr.contains("m@example.com") && !stderr.contains("b@example.com"));
}
