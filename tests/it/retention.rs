//! Retention (invariant 4): nothing younger than the cutoff and nothing not yet aggregated is
//! ever deleted; old months go as whole partitions, the boundary month in batches.

use diesel::connection::SimpleConnection;
use usage_worker::jobs::partitions::existing_partitions;
use usage_worker::jobs::{JobKind, RunOpts};

use crate::support::{self, TestDb, at};

const NOW: &str = "2027-01-15T12:00:00Z";
const CUTOFF: &str = "2025-01-15T12:00:00Z";

/// 30 months of events (2024-08 … 2027-01), 3 a month, plus events around the cutoff,
/// partitioned and fully aggregated.
fn thirty_months(db: &TestDb) {
    db.execute(
        "INSERT INTO usage_events (user_id, kind, tokens, created_at)
         SELECT u, 'ai_response', 10, m + interval '3 days'
           FROM generate_series(timestamptz '2024-08-01', '2027-01-01', interval '1 month') AS m,
                generate_series(1, 3) AS u;
         INSERT INTO usage_events (user_id, kind, tokens, created_at) VALUES
             (7, 'ai_response', 1, timestamptz '2025-01-15T12:00:00Z' - interval '1 microsecond'),
             (7, 'ai_response', 2, timestamptz '2025-01-15T12:00:00Z'),
             (7, 'ai_response', 3, timestamptz '2025-01-15T12:00:00.000001Z');",
    );
    JobKind::Partitions
        .run(&db.ctx(), &mut db.conn(), at(NOW), &RunOpts::default())
        .unwrap();
    mark_all_aggregated(db);
}

/// Moves the watermark past every event inserted so far, as if `aggregate` had run. (The
/// snapshot's xmin would be held back by other tests' transactions on the shared cluster.)
fn mark_all_aggregated(db: &TestDb) {
    db.execute("UPDATE aggregation_watermark SET xid = pg_current_xact_id()");
}

fn retention(db: &TestDb, dry_run: bool) -> serde_json::Value {
    let opts = RunOpts {
        dry_run,
        ..RunOpts::default()
    };
    JobKind::Retention
        .run(&db.ctx(), &mut db.conn(), at(NOW), &opts)
        .unwrap()
        .details
}

fn count_before_cutoff(db: &TestDb) -> i64 {
    db.count(&format!(
        "SELECT count(*) AS n FROM usage_events WHERE created_at < '{CUTOFF}'"
    ))
}

fn count_from_cutoff(db: &TestDb) -> i64 {
    db.count(&format!(
        "SELECT count(*) AS n FROM usage_events WHERE created_at >= '{CUTOFF}'"
    ))
}

#[test]
fn events_before_the_cutoff_go_and_events_at_or_after_it_stay() {
    let db = TestDb::new();
    thirty_months(&db);
    let younger = count_from_cutoff(&db);
    assert!(count_before_cutoff(&db) > 0);

    let details = retention(&db, false);

    assert_eq!(count_before_cutoff(&db), 0);
    assert_eq!(count_from_cutoff(&db), younger);
    // The event 1 µs before the cutoff went; the ones at the cutoff and 1 µs after stayed.
    assert_eq!(
        db.count("SELECT count(*) AS n FROM usage_events WHERE user_id = 7"),
        2
    );
    assert_eq!(details["tables"]["usage_events"]["not_aggregated_kept"], 0);
}

#[test]
fn whole_months_are_dropped_as_partitions_and_the_boundary_month_is_trimmed() {
    let db = TestDb::new();
    thirty_months(&db);
    let details = retention(&db, false);

    let dropped: Vec<String> = details["tables"]["usage_events"]["partitions_dropped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        dropped,
        vec![
            "usage_events_2024_08",
            "usage_events_2024_09",
            "usage_events_2024_10",
            "usage_events_2024_11",
            "usage_events_2024_12"
        ]
    );
    let remaining = existing_partitions(&mut db.conn()).unwrap();
    assert_eq!(remaining.iter().next().unwrap(), "usage_events_2025_01");
    // Boundary month: the three events of 2025-01-04 and the one 1 µs before the cutoff.
    assert_eq!(details["tables"]["usage_events"]["rows_deleted"], 4);
    assert_eq!(
        db.count("SELECT count(*) AS n FROM usage_events_2025_01"),
        2
    );
}

#[test]
fn old_rows_in_the_default_partition_are_deleted_in_batches() {
    let db = TestDb::new();
    thirty_months(&db);
    retention(&db, false);
    // Late rows for a month whose partition is gone land in the default partition.
    db.execute(
        "INSERT INTO usage_events (user_id, kind, created_at)
         SELECT 9, 'message_sent', timestamptz '2024-03-01' + n * interval '1 minute'
           FROM generate_series(1, 2500) AS n;
         INSERT INTO usage_events (user_id, kind, created_at)
         VALUES (9, 'message_sent', '2030-01-01T00:00:00Z');",
    );
    mark_all_aggregated(&db);
    let ctx = db.ctx_with(|s| s.retention.batch_size = 1000);
    let report = JobKind::Retention
        .run(&ctx, &mut db.conn(), at(NOW), &RunOpts::default())
        .unwrap();
    assert_eq!(
        report.details["tables"]["usage_events"]["rows_deleted"],
        2500
    );
    assert_eq!(
        db.count("SELECT count(*) AS n FROM ONLY usage_events_default"),
        1,
        "the future row in the default partition must stay"
    );
}

#[test]
fn old_events_not_yet_aggregated_survive_and_are_reported() {
    let db = TestDb::new();
    thirty_months(&db);
    // Inserted after the watermark was taken: not aggregated yet.
    db.execute(
        "INSERT INTO usage_events (user_id, kind, created_at)
         VALUES (11, 'message_sent', '2024-09-10T00:00:00Z'),
                (11, 'message_sent', '2025-01-02T00:00:00Z')",
    );
    let details = retention(&db, false);
    assert_eq!(details["tables"]["usage_events"]["not_aggregated_kept"], 2);
    assert_eq!(
        db.count("SELECT count(*) AS n FROM usage_events WHERE user_id = 11"),
        2
    );
    assert!(
        existing_partitions(&mut db.conn())
            .unwrap()
            .contains("usage_events_2024_09"),
        "a partition holding unaggregated events must not be dropped"
    );
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) AS n FROM usage_events WHERE created_at < '{CUTOFF}' AND user_id <> 11"
        )),
        0,
        "aggregated rows around the kept ones still go"
    );
}

#[test]
fn a_dry_run_changes_nothing_and_a_rerun_changes_nothing() {
    let db = TestDb::new();
    thirty_months(&db);
    let total = db.count("SELECT count(*) AS n FROM usage_events");
    let partitions = existing_partitions(&mut db.conn()).unwrap();

    let dry = retention(&db, true);
    assert_eq!(db.count("SELECT count(*) AS n FROM usage_events"), total);
    assert_eq!(existing_partitions(&mut db.conn()).unwrap(), partitions);
    assert_eq!(
        dry["tables"]["usage_events"]["partitions_dropped"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    assert!(
        dry["tables"]["usage_events"]["bytes_freed_estimate"]
            .as_i64()
            .unwrap()
            > 0
    );

    let real = retention(&db, false);
    assert_eq!(
        dry["tables"]["usage_events"]["rows_deleted"],
        real["tables"]["usage_events"]["rows_deleted"]
    );
    let after = db.count("SELECT count(*) AS n FROM usage_events");
    let again = retention(&db, false);
    assert_eq!(db.count("SELECT count(*) AS n FROM usage_events"), after);
    assert_eq!(again["tables"]["usage_events"]["rows_deleted"], 0);
    assert_eq!(
        again["tables"]["usage_events"]["partitions_dropped"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

#[test]
fn run_history_older_than_its_own_setting_is_deleted() {
    let db = TestDb::new();
    db.execute(
        "INSERT INTO job_runs (job, trigger, scheduled_for, started_at, status, host, pid) VALUES
           ('partitions', 'cron', '2026-09-01', '2026-09-01', 'succeeded', 'h', 1),
           ('partitions', 'cron', '2026-12-01', '2026-12-01', 'succeeded', 'h', 1)",
    );
    let details = retention(&db, false);
    assert_eq!(details["tables"]["job_runs"]["rows_deleted"], 1);
    assert_eq!(db.count("SELECT count(*) AS n FROM job_runs"), 1);
}

#[test]
fn inserts_issued_while_retention_runs_complete_within_a_short_lock_timeout() {
    let db = TestDb::new();
    thirty_months(&db);
    db.execute(
        "INSERT INTO usage_events (user_id, kind, created_at)
         SELECT 5, 'message_sent', timestamptz '2025-01-02' + n * interval '1 second'
           FROM generate_series(1, 60000) AS n",
    );
    mark_all_aggregated(&db);
    let ctx = db.ctx_with(|s| s.retention.batch_size = 500);
    let url = db.url.clone();
    let writer = std::thread::spawn(move || {
        let mut conn = crate::support::connect(&url);
        conn.batch_execute("SET lock_timeout = '100ms'").unwrap();
        let mut written = 0;
        for i in 0..200 {
            conn.batch_execute(&format!(
                "INSERT INTO usage_events (user_id, kind, created_at)
                 VALUES (6, 'message_sent', '2025-06-01T00:00:00Z'::timestamptz + interval '{i} seconds')"
            ))
            .unwrap_or_else(|e| panic!("insert {i} failed while retention ran: {e}"));
            written += 1;
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        written
    });
    JobKind::Retention
        .run(&ctx, &mut db.conn(), at(NOW), &RunOpts::default())
        .unwrap();
    assert_eq!(writer.join().unwrap(), 200);
    assert_eq!(count_before_cutoff(&db), 0);
}

#[test]
fn summaries_closed_periods_and_finished_alerts_older_than_their_settings_go() {
    let db = TestDb::new();
    db.execute(
        "INSERT INTO users (id, email) VALUES (1, 'a@example.com');
         INSERT INTO token_usage_daily (user_id, day, kind, request_type, model, events, tokens,
                                        prompt_tokens, completion_tokens, messages, bytes, cost)
         VALUES (1, '2025-01-14', 'ai_response', '', '', 1, 1, 0, 0, 0, 0, 0),
                (1, '2025-01-15', 'ai_response', '', '', 1, 1, 0, 0, 0, 0, 0);
         INSERT INTO usage_periods (user_id, period, period_start, period_end, status, close_reason)
         VALUES (1, 'day', '2025-01-13', '2025-01-14', 'closed', 'rollover'),
                (1, 'day', '2025-01-15T12:00:00Z', '2025-01-16', 'closed', 'rollover'),
                (1, 'month', '2024-12-01', '2025-01-01', 'open', NULL);
         INSERT INTO usage_period_kind_totals (user_id, period, period_start, kind, requests)
         VALUES (1, 'day', '2025-01-13', 'ai_response', 1);",
    );
    db.execute(
        "INSERT INTO quota_alerts (user_id, metric, period, kind, period_start, period_end,
                                   threshold, status, used_value, limit_value, decided_at,
                                   next_attempt_at, message_id)
         VALUES (1, 'tokens', 'month', '', '2024-12-01', '2025-01-01', 80, 'sent', 80, 100,
                 '2024-12-20', '2024-12-20', 'm1@example.com'),
                (1, 'tokens', 'month', '', '2024-12-01', '2025-01-01', 95, 'pending', 95, 100,
                 '2024-12-21', '2024-12-21', NULL)",
    );
    let details = retention(&db, false);
    assert_eq!(details["tables"]["token_usage_daily"]["rows_deleted"], 1);
    assert_eq!(details["tables"]["usage_periods"]["rows_deleted"], 1);
    assert_eq!(details["tables"]["quota_alerts"]["rows_deleted"], 1);
    assert_eq!(
        db.count("SELECT count(*) AS n FROM token_usage_daily WHERE day = '2025-01-15'"),
        1
    );
    assert_eq!(
        db.count("SELECT count(*) AS n FROM usage_periods"),
        2,
        "the younger closed period and the open one stay"
    );
    assert_eq!(
        db.count("SELECT count(*) AS n FROM usage_period_kind_totals"),
        0
    );
    assert_eq!(
        db.count("SELECT count(*) AS n FROM quota_alerts WHERE status = 'pending'"),
        1,
        "an alert not yet delivered is never deleted"
    );
}

/// An event committed into an old partition after retention probed it (here: while the run
/// waits to trim the default partition) keeps the partition: the drop checks again under its
/// own locks, so the event is counted later instead of dropped uncounted.
#[test]
fn an_event_arriving_in_an_old_partition_after_the_probe_is_never_dropped() {
    let db = TestDb::new();
    thirty_months(&db);
    let mut blocker = db.conn();
    blocker
        .batch_execute("BEGIN; LOCK TABLE usage_events_default IN SHARE MODE;")
        .unwrap();
    let ctx = db.ctx();
    let url = db.url.clone();
    let run = std::thread::spawn(move || {
        let mut conn = crate::support::connect(&url);
        JobKind::Retention
            .run(&ctx, &mut conn, at(NOW), &RunOpts::default())
            .unwrap()
            .details
    });
    let waiting = "SELECT count(*) AS n FROM pg_locks
                    WHERE relation = 'usage_events_default'::regclass AND NOT granted
                      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";
    assert_eq!(
        db.wait_for_count(waiting, 1, std::time::Duration::from_secs(30)),
        1,
        "retention never reached the default partition"
    );
    db.execute(
        "INSERT INTO usage_events_2024_09 (user_id, kind, tokens, created_at)
         VALUES (9, 'ai_response', 99, '2024-09-20T00:00:00Z')",
    );
    blocker.batch_execute("COMMIT").unwrap();
    let report = run.join().unwrap();

    let events = &report["tables"]["usage_events"];
    let dropped: Vec<&str> = events["partitions_dropped"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    assert!(dropped.contains(&"usage_events_2024_08"), "{report}");
    assert!(!dropped.contains(&"usage_events_2024_09"), "{report}");
    assert_eq!(events["not_aggregated_kept"], 1, "{report}");
    assert_eq!(
        db.count("SELECT count(*) AS n FROM usage_events WHERE tokens = 99"),
        1
    );
}

#[test]
fn the_partition_functions_refuse_an_unaggregated_month_and_any_other_table() {
    let db = TestDb::new();
    thirty_months(&db);
    db.execute(
        "INSERT INTO usage_events (user_id, kind, tokens, created_at)
         VALUES (9, 'ai_response', 99, '2024-09-20T00:00:00Z')",
    );
    let detached = |name: &str| {
        db.count(&format!(
            "SELECT usage_detach_partition('{name}', '{CUTOFF}')::int::bigint AS n"
        ))
    };
    assert_eq!(detached("usage_events_2024_09"), 0);
    assert_eq!(detached("usage_events_2024_10"), 1);
    let moved = db.count("SELECT usage_drop_detached_partition('usage_events_2024_10') AS n");
    assert_eq!(moved, 0);
    for (call, name) in [
        ("usage_detach_partition", "usage_events_2026_12"),
        ("usage_detach_partition", "usage_events_default"),
        ("usage_detach_partition", "job_runs"),
        ("usage_detach_partition", "usage_events_2024_10"),
        ("usage_drop_detached_partition", "usage_events_2024_09"),
        ("usage_drop_detached_partition", "job_runs"),
    ] {
        let args = if call == "usage_detach_partition" {
            format!("'{name}', '{CUTOFF}'")
        } else {
            format!("'{name}'")
        };
        let error = db
            .conn()
            .batch_execute(&format!("SELECT {call}({args})"))
            .expect_err(name)
            .to_string();
        assert!(error.contains(call), "{call}({name}): {error}");
    }
    assert_eq!(
        db.count("SELECT count(*) AS n FROM pg_class WHERE relname IN ('usage_events_2024_09', 'usage_events_2026_12', 'job_runs', 'usage_events_2024_10')"),
        3
    );
}

#[test]
fn a_detached_month_is_dropped_without_locking_usage_events_and_never_with_an_uncounted_event() {
    let db = TestDb::new();
    thirty_months(&db);
    for month in ["usage_events_2024_11", "usage_events_2024_12"] {
        let detached = db.count(&format!(
            "SELECT usage_detach_partition('{month}', '{CUTOFF}')::int::bigint AS n"
        ));
        assert_eq!(detached, 1, "{month}");
    }
    // Someone writes into a detached month by name: that event is moved back, not dropped.
    db.execute(
        "INSERT INTO usage_events_2024_11 (user_id, kind, tokens, created_at)
         VALUES (9, 'ai_response', 77, '2024-11-20T00:00:00Z')",
    );
    let moved = db.count("SELECT usage_drop_detached_partition('usage_events_2024_11') AS n");
    assert_eq!(moved, 1);
    assert_eq!(
        db.count("SELECT count(*) AS n FROM usage_events WHERE tokens = 77"),
        1
    );

    // While the drop waits for its table, inserts into usage_events do not wait for it.
    let mut holder = db.conn();
    holder
        .batch_execute("BEGIN; LOCK TABLE usage_events_2024_12 IN ACCESS EXCLUSIVE MODE;")
        .unwrap();
    let dropper = {
        let mut conn = db.conn();
        std::thread::spawn(move || {
            support::count(
                &mut conn,
                "SELECT usage_drop_detached_partition('usage_events_2024_12') AS n",
            )
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    db.execute(
        "SET statement_timeout = '2s';
         INSERT INTO usage_events (user_id, kind, tokens) VALUES (9, 'ai_response', 1);",
    );
    holder.batch_execute("COMMIT").unwrap();
    assert_eq!(dropper.join().unwrap().unwrap(), 0);
    assert_eq!(
        db.count("SELECT count(*) AS n FROM pg_class WHERE relname = 'usage_events_2024_12'"),
        0
    );
}

/// Per-kind totals have no foreign key (its per-row check cost more than the row): deleting
/// periods by hand, in one statement, takes exactly their per-kind rows with them.
#[test]
fn periods_deleted_by_hand_take_their_per_kind_totals_and_no_others() {
    let db = TestDb::new();
    db.execute(
        "INSERT INTO usage_periods (user_id, org_id, period, period_start, period_end)
         VALUES (1, 0, 'day', '2025-01-13', '2025-01-14'), (1, 0, 'day', '2025-01-14', '2025-01-15'),
                (0, 7, 'day', '2025-01-13', '2025-01-14');
         INSERT INTO usage_period_kind_totals (user_id, org_id, period, period_start, kind, requests)
         VALUES (1, 0, 'day', '2025-01-13', 'ai_response', 1), (1, 0, 'day', '2025-01-13', 'file_upload', 1),
                (1, 0, 'day', '2025-01-14', 'ai_response', 1), (0, 7, 'day', '2025-01-13', 'ai_response', 1);
         DELETE FROM usage_periods WHERE period_start < '2025-01-14' AND org_id = 0;",
    );
    let left = |sql: &str| {
        db.count(&format!(
            "SELECT count(*) AS n FROM usage_period_kind_totals WHERE {sql}"
        ))
    };
    assert_eq!(left("user_id = 1 AND period_start = '2025-01-13'"), 0);
    assert_eq!(
        left("user_id = 1 AND period_start = '2025-01-14'"),
        1,
        "a later period keeps its rows"
    );
    assert_eq!(
        left("org_id = 7"),
        1,
        "the organization's period of the same start keeps its row"
    );
}
