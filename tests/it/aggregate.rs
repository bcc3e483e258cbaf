//! The aggregate job: exactly-once summaries, rebuilds, the usage summary, stats and CSV
//! export. Every test runs alone on its cluster ([`TestDb::alone`]): a transaction open
//! anywhere in the cluster holds the aggregation watermark back, and the assertions that
//! every event is aggregated would depend on the other tests.

use std::thread;
use std::time::Duration;

use chrono::NaiveDate;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Text};
use proptest::prelude::*;
use usage_worker::jobs::{Ctx, JobError, JobKind, JobReport, RunOpts};

use crate::support::books::{assert_all_aggregated_exactly, summary_differences};
use crate::support::writers::{
    Spender, WriterStream, transactions, write_while_aggregating, writer_stream,
};
use crate::support::{self, TestDb, at};

fn date(text: &str) -> NaiveDate {
    text.parse().unwrap()
}

const NOW: &str = "2026-11-23T10:00:00Z";

fn aggregate(ctx: &Ctx, conn: &mut PgConnection) -> Result<JobReport, JobError> {
    JobKind::Aggregate.run(ctx, conn, at(NOW), &RunOpts::default())
}

fn rebuild(db: &TestDb, from: &str, to: &str, dry_run: bool) -> JobReport {
    let opts = RunOpts {
        from: Some(date(from)),
        to: Some(date(to)),
        dry_run,
        ..RunOpts::default()
    };
    JobKind::Aggregate
        .run(&db.ctx(), &mut db.conn(), at(NOW), &opts)
        .unwrap()
}

fn watermark(db: &TestDb) -> String {
    #[derive(QueryableByName)]
    struct W {
        #[diesel(sql_type = Text)]
        xid: String,
    }
    diesel::sql_query("SELECT xid::text AS xid FROM aggregation_watermark")
        .get_result::<W>(&mut db.conn())
        .unwrap()
        .xid
}

fn summary_tokens(db: &TestDb, user_id: i64, day: &str) -> i64 {
    db.count(&format!(
        "SELECT COALESCE(sum(tokens), 0)::bigint AS n FROM token_usage_daily
          WHERE user_id = {user_id} AND day = '{day}'"
    ))
}

#[test]
fn new_events_are_added_once_and_a_second_run_changes_nothing() {
    let db = TestDb::alone();
    db.add_user(1, "Europe/Berlin");
    db.execute(
        "INSERT INTO usage_events (user_id, kind, request_type, model, tokens, prompt_tokens,
                                   completion_tokens, cost, created_at)
         VALUES (1, 'ai_response', 'chat', 'gpt-4o', 300, 100, 200, 0.00250000, '2026-11-22T23:15:00Z'),
                (1, 'ai_response', 'chat', 'gpt-4o', 30, 10, 20, 0.00025000, '2026-11-22T23:45:00Z'),
                (1, 'message_sent', 'chat', '', 0, 0, 0, 0, '2026-11-22T12:00:00Z')",
    );
    let ctx = db.ctx();
    let report = aggregate(&ctx, &mut db.conn()).unwrap();
    assert_eq!(report.details["events"], 3);
    // 23:15 UTC is already the 23rd in Berlin (UTC+1 in November).
    assert_eq!(summary_tokens(&db, 1, "2026-11-23"), 330);
    assert_eq!(summary_tokens(&db, 1, "2026-11-22"), 0);
    assert_eq!(
        db.count("SELECT count(*) AS n FROM token_usage_daily WHERE day = '2026-11-22'"),
        1
    );
    assert_eq!(summary_differences(&db), 0);

    let again = aggregate(&ctx, &mut db.conn()).unwrap();
    assert_eq!(again.details["events"], 0);
    assert_eq!(summary_tokens(&db, 1, "2026-11-23"), 330);
    assert_eq!(summary_differences(&db), 0);
}

#[test]
fn an_event_dated_forty_days_ago_and_inserted_today_lands_in_its_own_day() {
    let db = TestDb::alone();
    db.add_user(7, "America/New_York");
    db.execute(
        "INSERT INTO usage_events (user_id, kind, tokens, created_at)
         VALUES (7, 'ai_response', 50, '2026-11-23T09:00:00Z')",
    );
    let ctx = db.ctx();
    aggregate(&ctx, &mut db.conn()).unwrap();

    // 40 days before now, 02:00 UTC: still the previous evening in New York.
    db.execute(
        "INSERT INTO usage_events (user_id, kind, tokens, cost, created_at)
         VALUES (7, 'ai_response', 1234, 0.5, '2026-10-14T02:00:00Z')",
    );
    let report = aggregate(&ctx, &mut db.conn()).unwrap();
    assert_eq!(report.details["events"], 1);
    assert_eq!(summary_tokens(&db, 7, "2026-10-13"), 1234);
    assert_eq!(summary_tokens(&db, 7, "2026-11-23"), 50);
    assert_eq!(summary_differences(&db), 0);
}

#[test]
fn a_user_in_zone_mars_olympus_is_counted_in_utc_reported_once_and_others_are_unaffected() {
    let db = TestDb::alone();
    db.add_user(1, "Mars/Olympus");
    db.add_user(2, "Asia/Tokyo");
    // Three transactions and a batch size of one: three aggregate transactions in one run.
    for _ in 0..3 {
        db.execute(
            "INSERT INTO usage_events (user_id, kind, tokens, created_at)
             VALUES (1, 'ai_response', 10, '2026-11-22T20:00:00Z'),
                    (2, 'ai_response', 10, '2026-11-22T20:00:00Z')",
        );
    }
    let ctx = db.ctx_with(|s| s.aggregate.batch_events = 1);
    let report = aggregate(&ctx, &mut db.conn()).unwrap();

    assert_eq!(report.details["transactions"], 3);
    assert_eq!(report.details["unknown_timezone_users"], 1);
    assert_eq!(
        report.details["unknown_timezone_user_ids"],
        serde_json::json!([1])
    );
    assert!(
        report.summary.contains("unknown time zone"),
        "{}",
        report.summary
    );
    assert_eq!(summary_tokens(&db, 1, "2026-11-22"), 30);
    assert_eq!(summary_tokens(&db, 2, "2026-11-23"), 30);
    assert_eq!(summary_tokens(&db, 2, "2026-11-22"), 0);
    assert_eq!(summary_differences(&db), 0);
}

#[test]
fn a_backlog_is_worked_through_in_bounded_transactions_without_splitting_one_insert() {
    let db = TestDb::alone();
    // One transaction of 25 events, then 10 single-event transactions.
    db.execute(
        "INSERT INTO usage_events (user_id, kind, tokens, created_at)
         SELECT g % 5, 'ai_response', g, '2026-11-20T12:00:00Z' FROM generate_series(1, 25) g",
    );
    for i in 0..10 {
        db.execute(&format!(
            "INSERT INTO usage_events (user_id, kind, tokens, created_at)
             VALUES ({i}, 'message_sent', 1, '2026-11-21T12:00:00Z')"
        ));
    }
    let ctx = db.ctx_with(|s| s.aggregate.batch_events = 4);
    let report = aggregate(&ctx, &mut db.conn()).unwrap();
    assert_eq!(report.details["events"], 35);
    // The 25-event insert as one transaction, then 10 events in batches of at most 4.
    assert_eq!(report.details["transactions"], 1 + 3);
    assert_all_aggregated_exactly(&db);
}

#[test]
fn a_connection_killed_in_the_middle_of_aggregation_loses_and_repeats_nothing() {
    let db = TestDb::alone();
    db.add_user(1, "UTC");
    db.add_user(2, "Asia/Kolkata");
    db.execute(
        "INSERT INTO usage_events (user_id, kind, tokens, cost, created_at)
         VALUES (1, 'ai_response', 100, 1.25, '2026-11-22T10:00:00Z')",
    );
    let ctx = db.ctx();
    aggregate(&ctx, &mut db.conn()).unwrap();
    db.execute(
        "INSERT INTO usage_events (user_id, kind, tokens, cost, created_at)
         VALUES (2, 'ai_response', 7, 0.01, '2026-11-22T10:00:00Z'),
                (1, 'ai_response', 5, 0.02, '2026-11-22T11:00:00Z'),
                (2, 'file_upload', 0, 0.03, '2026-11-21T10:00:00Z')",
    );
    let watermark_before = watermark(&db);

    // Hold the lock of user 1's summary row so the aggregate stops inside its transaction,
    // after the batch was read and other rows were written.
    let mut locker = db.conn();
    locker
        .batch_execute("BEGIN; SELECT * FROM token_usage_daily WHERE user_id = 1 FOR UPDATE")
        .unwrap();
    #[derive(QueryableByName)]
    struct Pid {
        #[diesel(sql_type = Integer)]
        pid: i32,
    }
    let mut victim = db.conn();
    let pid = diesel::sql_query("SELECT pg_backend_pid() AS pid")
        .get_result::<Pid>(&mut victim)
        .unwrap()
        .pid;
    let ctx2 = ctx.clone();
    let worker = thread::spawn(move || aggregate(&ctx2, &mut victim));
    assert!(
        support::wait_until(Duration::from_secs(60), || {
            db.count(&format!(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE pid = {pid} AND wait_event_type = 'Lock'"
        )) > 0
        }),
        "the aggregate never waited for the held row lock"
    );
    db.execute(&format!("SELECT pg_terminate_backend({pid})"));
    let killed = worker.join().unwrap();
    assert!(killed.is_err(), "the killed run must fail: {killed:?}");
    locker.batch_execute("ROLLBACK").unwrap();

    assert_eq!(watermark(&db), watermark_before);
    assert_eq!(summary_tokens(&db, 1, "2026-11-22"), 100);
    assert_eq!(
        db.count("SELECT count(*) AS n FROM token_usage_daily WHERE user_id = 2"),
        0
    );

    let rerun = aggregate(&ctx, &mut db.conn()).unwrap();
    assert_eq!(rerun.details["events"], 3);
    assert_eq!(summary_tokens(&db, 1, "2026-11-22"), 105);
    assert_eq!(summary_tokens(&db, 2, "2026-11-22"), 7);
    assert_all_aggregated_exactly(&db);
}

#[test]
fn rebuild_after_tampering_restores_the_exact_values_and_dry_run_only_reports() {
    let db = TestDb::alone();
    db.add_user(1, "Europe/Berlin");
    db.add_user(2, "America/Los_Angeles");
    db.execute(
        "INSERT INTO usage_events (user_id, kind, model, tokens, cost, created_at)
         SELECT 1 + g % 2, 'ai_response', 'gpt-4o', g, g * 0.001, '2026-10-01T00:00:00Z'::timestamptz + g * interval '1 hour'
           FROM generate_series(0, 24 * 31) g",
    );
    let ctx = db.ctx();
    aggregate(&ctx, &mut db.conn()).unwrap();
    assert_eq!(summary_differences(&db), 0);

    db.execute(
        "UPDATE token_usage_daily SET tokens = tokens + 5, cost = cost + 0.01
          WHERE user_id = 1 AND day = '2026-10-10';
         DELETE FROM token_usage_daily WHERE user_id = 2 AND day = '2026-10-11';
         INSERT INTO token_usage_daily (user_id, day, kind, request_type, model, events, tokens)
         VALUES (3, '2026-10-12', 'ai_response', '', '', 1, 99)",
    );
    // An event after the last run is above the watermark: the rebuild must leave it to the
    // incremental path.
    db.execute(
        "INSERT INTO usage_events (user_id, kind, model, tokens, created_at)
         VALUES (1, 'ai_response', 'gpt-4o', 1000, '2026-10-10T12:00:00Z')",
    );
    // The changed row disagrees both ways, the deleted and the invented one once each.
    assert_eq!(summary_differences(&db), 4);

    let dry = rebuild(&db, "2026-10-09", "2026-10-12", true);
    assert_eq!(dry.details["rows_differing"], 3);
    assert_eq!(dry.details["differences"].as_array().unwrap().len(), 3);
    assert_eq!(summary_differences(&db), 4);

    let report = rebuild(&db, "2026-10-09", "2026-10-12", false);
    assert_eq!(report.details["rows_differing"], 3);
    assert_eq!(summary_differences(&db), 0);
    assert_eq!(
        rebuild(&db, "2026-10-01", "2026-10-31", false).details["rows_differing"],
        0
    );

    aggregate(&ctx, &mut db.conn()).unwrap();
    assert_all_aggregated_exactly(&db);
}

#[test]
fn rebuild_of_one_user_leaves_the_other_users_rows_alone() {
    let db = TestDb::alone();
    db.execute(
        "INSERT INTO usage_events (user_id, kind, tokens, created_at)
         VALUES (1, 'ai_response', 10, '2026-10-05T12:00:00Z'),
                (2, 'ai_response', 20, '2026-10-05T12:00:00Z')",
    );
    let ctx = db.ctx();
    aggregate(&ctx, &mut db.conn()).unwrap();
    db.execute("UPDATE token_usage_daily SET tokens = 0");
    let opts = RunOpts {
        from: Some(date("2026-10-05")),
        to: Some(date("2026-10-05")),
        user_id: Some(2),
        ..RunOpts::default()
    };
    JobKind::Aggregate
        .run(&ctx, &mut db.conn(), at(NOW), &opts)
        .unwrap();
    assert_eq!(summary_tokens(&db, 2, "2026-10-05"), 20);
    assert_eq!(summary_tokens(&db, 1, "2026-10-05"), 0);
}

#[test]
fn user_without_range_and_half_ranges_are_refused_with_a_hint() {
    let db = TestDb::alone();
    let ctx = db.ctx();
    for opts in [
        RunOpts {
            user_id: Some(1),
            ..RunOpts::default()
        },
        RunOpts {
            from: Some(date("2026-10-05")),
            ..RunOpts::default()
        },
        RunOpts {
            from: Some(date("2026-10-06")),
            to: Some(date("2026-10-05")),
            ..RunOpts::default()
        },
    ] {
        let err = JobKind::Aggregate
            .run(&ctx, &mut db.conn(), at(NOW), &opts)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--from") && err.contains("aggregate"), "{err}");
    }
}

const ZONES: &[&str] = &[
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "Pacific/Kiritimati",
    "Pacific/Pago_Pago",
    "Mars/Olympus",
];

/// Users 1.. in ZONES, then a user id without a users row; all personal usage.
fn spender(index: usize) -> Spender {
    (index as i64 + 1, None)
}

fn conservation_holds_under_concurrent_writers(streams: Vec<WriterStream>) {
    let db = TestDb::alone();
    for (id, zone) in (1..).zip(ZONES) {
        db.add_user(id, zone);
    }
    let ctx = db.ctx_with(|s| s.aggregate.batch_events = 7);
    let writers = streams
        .into_iter()
        .map(|stream| transactions(stream, spender))
        .collect();
    write_while_aggregating(&db, &ctx, NOW, writers);
    assert_all_aggregated_exactly(&db);
    assert_eq!(
        db.count("SELECT COALESCE(sum(tokens), 0)::bigint AS n FROM token_usage_daily"),
        db.count("SELECT COALESCE(sum(tokens), 0)::bigint AS n FROM usage_events")
    );
    assert_eq!(
        db.count("SELECT (COALESCE(sum(cost), 0) * 100)::bigint AS n FROM token_usage_daily"),
        db.count("SELECT (COALESCE(sum(cost), 0) * 100)::bigint AS n FROM usage_events")
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    #[test]
    fn summary_equals_raw_sums_for_every_user_and_day_with_concurrent_writers(
        streams in prop::collection::vec(writer_stream(ZONES.len() + 1, 20), 3..5)
    ) {
        conservation_holds_under_concurrent_writers(streams);
    }
}

#[test]
fn usage_summary_sums_days_into_weeks_months_and_years() {
    let db = TestDb::alone();
    db.execute(
        "INSERT INTO token_usage_daily (user_id, day, kind, request_type, model, events, tokens, cost)
         VALUES (1, '2026-10-31', 'ai_response', 'chat', 'gpt-4o', 2, 100, 0.5),
                (1, '2026-11-01', 'ai_response', 'chat', 'gpt-4o', 1, 10, 0.25),
                (1, '2026-11-02', 'message_sent', 'chat', '', 3, 0, 0),
                (2, '2026-11-02', 'ai_response', '', '', 9, 999, 9)",
    );
    #[derive(QueryableByName, Debug, PartialEq)]
    struct Row {
        #[diesel(sql_type = Text)]
        period_start: String,
        #[diesel(sql_type = BigInt)]
        events: i64,
        #[diesel(sql_type = BigInt)]
        tokens: i64,
        #[diesel(sql_type = Text)]
        cost: String,
    }
    let summary = |granularity: &str| -> Vec<(String, i64, i64, String)> {
        diesel::sql_query(
            "SELECT period_start::text, events, tokens, cost::text
               FROM usage_summary(1, $1, '2026-10-01', '2026-11-30')",
        )
        .bind::<Text, _>(granularity)
        .load::<Row>(&mut db.conn())
        .unwrap()
        .into_iter()
        .map(|r| (r.period_start, r.events, r.tokens, r.cost))
        .collect()
    };
    assert_eq!(summary("day").len(), 3);
    // 2026-10-31 is a Saturday: its ISO week starts on Monday 10-26; 11-02 starts the next.
    assert_eq!(
        summary("week"),
        vec![
            ("2026-10-26".into(), 3, 110, "0.75".into()),
            ("2026-11-02".into(), 3, 0, "0".into())
        ]
    );
    assert_eq!(
        summary("month"),
        vec![
            ("2026-10-01".into(), 2, 100, "0.5".into()),
            ("2026-11-01".into(), 4, 10, "0.25".into())
        ]
    );
    assert_eq!(
        summary("year"),
        vec![("2026-01-01".into(), 6, 110, "0.75".into())]
    );

    let err = diesel::sql_query(
        "SELECT * FROM usage_summary(1, 'fortnight', '2026-10-01', '2026-11-30')",
    )
    .execute(&mut db.conn())
    .unwrap_err()
    .to_string();
    assert!(err.contains("fortnight") && err.contains("week"), "{err}");
}

#[test]
fn stats_reports_yesterdays_totals_by_kind_and_top_models() {
    let db = TestDb::alone();
    db.execute(
        "INSERT INTO usage_events (user_id, kind, model, tokens, cost, created_at)
         VALUES (1, 'ai_response', 'gpt-4o', 100, 0.5, '2026-11-22T10:00:00Z'),
                (2, 'ai_response', 'claude-sonnet', 300, 0.25, '2026-11-22T11:00:00Z'),
                (2, 'message_sent', '', 0, 0, '2026-11-22T12:00:00Z'),
                (3, 'ai_response', 'gpt-4o', 999, 9, '2026-11-21T12:00:00Z')",
    );
    let ctx = db.ctx();
    aggregate(&ctx, &mut db.conn()).unwrap();
    let report = JobKind::Stats
        .run(&ctx, &mut db.conn(), at(NOW), &RunOpts::default())
        .unwrap();
    let d = &report.details;
    assert_eq!(d["day"], "2026-11-22");
    assert_eq!(d["totals"]["events"], 3);
    assert_eq!(d["totals"]["active_users"], 2);
    assert_eq!(d["totals"]["tokens"], 400);
    assert_eq!(d["totals"]["cost"], "0.75000000");
    assert_eq!(d["by_kind"][0]["name"], "ai_response");
    assert_eq!(d["by_kind"][0]["events"], 2);
    assert_eq!(d["top_models"][0]["name"], "claude-sonnet");
    assert_eq!(d["top_models"][1]["name"], "gpt-4o");
    assert!(
        report
            .summary
            .starts_with("2026-11-22: 3 event(s), 2 active user(s)")
    );
}

#[test]
fn csv_export_writes_a_header_and_the_summary_rows_of_the_range_with_exact_cost() {
    let db = TestDb::alone();
    db.execute(
        "INSERT INTO token_usage_daily (user_id, day, kind, request_type, model, events, tokens, cost)
         VALUES (1, '2026-10-01', 'ai_response', 'chat', 'model, \"quoted\"', 2, 100, 0.12345678),
                (1, '2026-10-02', 'message_sent', 'chat', '', 1, 0, 0),
                (2, '2026-10-01', 'ai_response', '', '', 1, 5, 1),
                (2, '2026-11-01', 'ai_response', '', '', 1, 5, 1)",
    );
    let mut out = Vec::new();
    let rows = usage_worker::export::write_daily_csv(
        &mut db.conn(),
        date("2026-10-01"),
        date("2026-10-31"),
        usage_worker::export::ExportScope::All,
        &mut out,
    )
    .unwrap();
    assert_eq!(rows, 3);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "user_id,day,kind,request_type,model,events,tokens,prompt_tokens,completion_tokens,messages,bytes,cost,org_id\n\
         1,2026-10-01,ai_response,chat,\"model, \"\"quoted\"\"\",2,100,0,0,0,0,0.12345678,\n\
         1,2026-10-02,message_sent,chat,,1,0,0,0,0,0,0,\n\
         2,2026-10-01,ai_response,,,1,5,0,0,0,0,1,\n"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("user2.csv");
    support::stdout_of_success(
        db.binary()
            .args([
                "--export-csv",
                "--from",
                "2026-10-01",
                "--to",
                "2026-11-30",
                "--user",
                "2",
            ])
            .arg("--output")
            .arg(&path),
    );
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.lines().skip(1).all(|l| l.starts_with("2,")), "{text}");
}

/// A summary row deleted (retention, or by hand) while the aggregate transaction is adding to
/// it: the transaction waits for the delete, finds the row gone and writes it again, so the
/// new events are counted and nothing is added twice.
#[test]
fn a_summary_row_deleted_while_aggregate_adds_to_it_is_written_again_with_the_new_events() {
    let db = TestDb::alone();
    let ctx = db.ctx();
    db.execute(
        "INSERT INTO users (id, email) VALUES (1, 'a@example.com');
         INSERT INTO usage_events (user_id, kind, tokens, created_at)
         VALUES (1, 'ai_response', 100, '2026-11-20T10:00:00Z');",
    );
    aggregate(&ctx, &mut db.conn()).unwrap();
    db.execute(
        "INSERT INTO usage_events (user_id, kind, tokens, created_at)
         VALUES (1, 'ai_response', 7, '2026-11-20T11:00:00Z'), (1, 'file_upload', 5, '2026-11-20T11:00:00Z');",
    );
    // The delete holds the row's lock until it commits; aggregate lists the row, then waits.
    let mut deleter = db.conn();
    deleter
        .batch_execute(
            "BEGIN; DELETE FROM token_usage_daily WHERE user_id = 1 AND kind = 'ai_response';",
        )
        .unwrap();
    let worker = {
        let ctx = ctx.clone();
        let mut conn = db.conn();
        thread::spawn(move || aggregate(&ctx, &mut conn))
    };
    let waiting = support::wait_until(Duration::from_secs(30), || {
        db.count(
            "SELECT count(*) AS n FROM pg_stat_activity
              WHERE datname = current_database() AND wait_event_type = 'Lock'",
        ) > 0
    });
    deleter.batch_execute("COMMIT").unwrap();
    assert!(waiting, "aggregate never waited for the deleted row");
    worker.join().unwrap().unwrap();
    assert_eq!(
        db.count(
            "SELECT tokens AS n FROM token_usage_daily WHERE user_id = 1 AND kind = 'ai_response'"
        ),
        7,
        "the deleted row comes back holding the new event only"
    );
    assert_eq!(
        db.count(
            "SELECT tokens AS n FROM token_usage_daily WHERE user_id = 1 AND kind = 'file_upload'"
        ),
        5
    );
}
