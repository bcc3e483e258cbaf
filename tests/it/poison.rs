//! Poison rows: whatever an event holds, it is refused at insert naming one of our bounds or
//! counted exactly; a row from before the bounds is set aside and never stops anyone's
//! counting; a watermark left ahead by a restore is detected and can be rebased. Every test
//! runs alone on its cluster ([`TestDb::alone`]): an open transaction anywhere holds the
//! watermark back.

use chrono::NaiveDate;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use diesel::sql_types::Text;
use proptest::prelude::*;
use usage_worker::jobs::{JobError, JobKind, JobReport, RunOpts};

use crate::support::{self, TestDb, at, books};

const NOW: &str = "2026-11-23T10:00:00Z";
/// Two days on: every daily period of the events below has ended.
const LATER: &str = "2026-11-25T10:00:00Z";
/// The first day of the next month: November's monthly periods have ended.
const NEXT_MONTH: &str = "2026-12-02T00:00:00Z";

fn run(db: &TestDb, kind: JobKind, now: &str) -> Result<JobReport, JobError> {
    db.run_job(kind, now, &RunOpts::default())
}

/// Every job that reads events, as the daemon would run them: none may fail.
fn run_every_job(db: &TestDb) {
    for (kind, now) in [
        (JobKind::Aggregate, NOW),
        (JobKind::Partitions, NOW),
        (JobKind::ResetDaily, LATER),
        (JobKind::ResetMonthly, NEXT_MONTH),
        (JobKind::Stats, LATER),
        (JobKind::Retention, NOW),
    ] {
        run(db, kind, now).unwrap_or_else(|e| panic!("{kind} failed: {e}"));
    }
    let opts = RunOpts {
        from: Some(NaiveDate::from_ymd_opt(2026, 11, 1).unwrap()),
        to: Some(NaiveDate::from_ymd_opt(2026, 11, 30).unwrap()),
        ..RunOpts::default()
    };
    let rebuild = JobKind::Aggregate
        .run(&db.ctx(), &mut db.conn(), at(NOW), &opts)
        .unwrap_or_else(|e| panic!("rebuild failed: {e}"));
    assert_eq!(
        rebuild.details["rows_differing"], 0,
        "the rebuild disagrees with the incremental path: {}",
        rebuild.details
    );
}

/// Inserts rows as they could have been written before the bounds existed: the bounds not
/// yet validated are dropped for the statement and put back as they were.
fn insert_bypassing_bounds(db: &TestDb, sql: &str) {
    db.execute(&format!(
        "BEGIN;
         CREATE TEMP TABLE saved_bounds ON COMMIT DROP AS
         SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
          WHERE conrelid = 'usage_events'::regclass AND contype = 'c' AND NOT convalidated;
         DO $$ DECLARE b record; BEGIN
             FOR b IN SELECT * FROM saved_bounds LOOP
                 EXECUTE format('ALTER TABLE usage_events DROP CONSTRAINT %I', b.conname);
             END LOOP;
         END $$;
         {sql};
         DO $$ DECLARE b record; BEGIN
             FOR b IN SELECT * FROM saved_bounds LOOP
                 EXECUTE format('ALTER TABLE usage_events ADD CONSTRAINT %I %s', b.conname, b.def);
             END LOOP;
         END $$;
         COMMIT;"
    ));
}

/// Inserts `rows` of (user_id, kind, tokens, created_at) the way [`insert_bypassing_bounds`]
/// does.
fn insert_tokens_bypassing_bounds(db: &TestDb, rows: &str) {
    insert_bypassing_bounds(
        db,
        &format!("INSERT INTO usage_events (user_id, kind, tokens, created_at) VALUES {rows}"),
    );
}

/// Summary rows that differ from the raw sums of the counted events (below the watermark,
/// not set aside), either way. Every user of these tests is summarised in UTC.
fn summary_differences(db: &TestDb) -> i64 {
    db.count(
        "WITH raw AS (
             SELECT e.user_id, (e.created_at AT TIME ZONE 'UTC')::date AS day, e.kind,
                    e.request_type, e.model, count(*)::numeric AS events, sum(e.tokens) AS tokens,
                    sum(e.prompt_tokens) AS prompt_tokens, sum(e.completion_tokens) AS completion_tokens,
                    sum(e.messages)::numeric AS messages, sum(e.bytes) AS bytes, sum(e.cost) AS cost
               FROM usage_events e
              WHERE e.recorded_xid < (SELECT xid FROM aggregation_watermark)
                AND NOT EXISTS (SELECT 1 FROM usage_quarantine q
                                 WHERE q.event_id = e.id AND q.created_at = e.created_at)
              GROUP BY 1, 2, 3, 4, 5
         ), summary AS (
             SELECT user_id, day, kind, request_type, model, events::numeric, tokens::numeric,
                    prompt_tokens::numeric, completion_tokens::numeric, messages::numeric,
                    bytes::numeric, cost
               FROM token_usage_daily
         )
         SELECT count(*) AS n FROM ((SELECT * FROM raw EXCEPT SELECT * FROM summary)
                                    UNION ALL
                                    (SELECT * FROM summary EXCEPT SELECT * FROM raw)) d",
    )
}

fn not_yet_aggregated(db: &TestDb) -> i64 {
    db.count(
        "SELECT count(*) AS n FROM usage_events
          WHERE recorded_xid >= (SELECT xid FROM aggregation_watermark)",
    )
}

fn quarantined(db: &TestDb, reason: &str) -> i64 {
    db.count(&format!(
        "SELECT count(*) AS n FROM usage_quarantine WHERE reason = '{reason}'"
    ))
}

#[test]
fn an_infinite_timestamp_from_before_the_bounds_is_set_aside_and_everyone_else_is_counted() {
    let db = TestDb::alone();
    db.execute(
        "INSERT INTO users (id, email) VALUES (1, 'a@example.com'), (2, 'b@example.com');
         SELECT usage_record(1, 'ai_response', 100, p_created_at => '2026-11-22T08:00:00Z');
         SELECT usage_record(2, 'ai_response', 200, p_created_at => '2026-11-22T09:00:00Z');",
    );
    insert_bypassing_bounds(
        &db,
        "INSERT INTO usage_events (user_id, kind, tokens, created_at, cost)
         VALUES (1, 'ai_response', 7, 'infinity', 0), (1, 'ai_response', 7, '-infinity', 0),
                (3, 'ai_response', 7, '200000-01-01T00:00:00Z', 0),
                (4, 'ai_response', 7, '2026-11-22T10:00:00Z', 'NaN')",
    );

    let report = run(&db, JobKind::Aggregate, NOW).unwrap();
    assert_eq!(report.details["events"], 2, "{}", report.details);
    assert_eq!(report.details["quarantined"]["events"], 4);
    assert_eq!(
        report.details["quarantined"]["reasons"]["created_at_out_of_range"],
        3
    );
    assert_eq!(
        report.details["quarantined"]["reasons"]["cost_not_a_number"],
        1
    );
    assert!(report.summary.contains("4 event(s) that cannot be counted"));
    assert_eq!(not_yet_aggregated(&db), 0, "the watermark passed them all");
    assert_eq!(summary_differences(&db), 0);
    assert_eq!(
        db.count(
            "SELECT used::bigint AS n FROM quota_status(2, '2026-11-22T12:00:00Z')
              WHERE metric = 'tokens' AND period = 'day' AND kind = ''"
        ),
        200
    );

    let again = run(&db, JobKind::Aggregate, NOW).unwrap();
    assert_eq!(again.details["quarantined"]["events"], 0);
    assert_eq!(db.count("SELECT count(*) AS n FROM usage_quarantine"), 4);

    let partitions = run(&db, JobKind::Partitions, NOW).unwrap();
    assert_eq!(partitions.details["out_of_range_rows"], 3);
    run_every_job(&db);
    assert_eq!(
        db.count("SELECT count(*) AS n FROM usage_events WHERE created_at = 'infinity'"),
        1,
        "nothing deletes the row: it is set aside, not lost"
    );
}

#[test]
fn two_token_counts_near_two_to_the_63_for_one_user_and_day_are_set_aside_and_others_counted() {
    let db = TestDb::alone();
    // 6917529027641081856 = 2^62 + 2^61: one fits in a bigint, two do not.
    insert_tokens_bypassing_bounds(
        &db,
        "(1, 'ai_response', 6917529027641081856, '2026-11-22T08:00:00Z'),
         (1, 'ai_response', 6917529027641081856, '2026-11-22T09:00:00Z'),
         (1, 'ai_response', 5, '2026-11-22T10:00:00Z'),
         (2, 'ai_response', 40, '2026-11-22T10:00:00Z')",
    );
    let report = run(&db, JobKind::Aggregate, NOW).unwrap();
    assert_eq!(
        report.details["quarantined"]["events"], 1,
        "{}",
        report.details
    );
    assert_eq!(quarantined(&db, "daily_sum_overflow"), 1);
    // Smallest first: the small event and one large one are counted, the second large one not.
    assert_eq!(
        db.count("SELECT event_id AS n FROM usage_quarantine"),
        db.count("SELECT max(id) AS n FROM usage_events WHERE tokens > 5000")
    );
    assert_eq!(
        db.count("SELECT tokens AS n FROM token_usage_daily WHERE user_id = 1"),
        6917529027641081861
    );
    assert_eq!(
        db.count("SELECT tokens AS n FROM token_usage_daily WHERE user_id = 2"),
        40
    );
    assert_eq!(summary_differences(&db), 0);

    // The next day's summary row has room, the month's quota period does not.
    insert_tokens_bypassing_bounds(
        &db,
        "(1, 'ai_response', 6917529027641081856, '2026-11-23T08:00:00Z'),
         (2, 'ai_response', 2, '2026-11-23T08:00:00Z')",
    );
    let report = run(&db, JobKind::Aggregate, NOW).unwrap();
    assert_eq!(
        report.details["quarantined"]["reasons"]["period_sum_overflow"],
        1
    );
    assert_eq!(not_yet_aggregated(&db), 0);
    assert_eq!(summary_differences(&db), 0);
    run_every_job(&db);
    assert_eq!(
        db.count(
            "SELECT tokens AS n FROM usage_periods
              WHERE user_id = 2 AND period = 'month' AND status = 'closed'"
        ),
        42
    );
}

#[test]
fn an_organizations_period_past_two_to_the_63_sets_aside_the_member_event_that_would_pass_it() {
    let db = TestDb::alone();
    db.execute("INSERT INTO organizations (id, timezone) VALUES (3, 'UTC')");
    // Each member's daily row has room, the organization's periods (all members) do not; the
    // same amount spent personally counts in the user's own periods.
    insert_bypassing_bounds(
        &db,
        "INSERT INTO usage_events (user_id, org_id, kind, tokens, created_at)
         VALUES (1, 3, 'ai_response', 6917529027641081856, '2026-11-22T08:00:00Z'),
                (2, 3, 'ai_response', 6917529027641081856, '2026-11-22T09:00:00Z'),
                (2, 3, 'ai_response', 5, '2026-11-22T10:00:00Z'),
                (1, NULL, 'ai_response', 6917529027641081856, '2026-11-22T10:00:00Z')",
    );
    let report = run(&db, JobKind::Aggregate, NOW).unwrap();
    assert_eq!(
        report.details["quarantined"]["reasons"]["period_sum_overflow"], 1,
        "{}",
        report.details
    );
    assert_eq!(
        report.details["quarantined"]["org_ids"],
        serde_json::json!([3])
    );
    // Smallest first: the small event and the first large one are counted. The set-aside row
    // keeps the organization, for a corrected copy to be re-inserted with it.
    assert_eq!(
        db.count("SELECT event_id AS n FROM usage_quarantine WHERE org_id = 3"),
        db.count("SELECT max(id) AS n FROM usage_events WHERE org_id = 3 AND tokens > 5000")
    );
    assert_eq!(not_yet_aggregated(&db), 0);
    for (user_id, org_id, tokens) in [(0, 3, 6917529027641081861), (1, 0, 6917529027641081856)] {
        assert_eq!(
            db.count(&format!(
                "SELECT tokens AS n FROM usage_periods
                  WHERE user_id = {user_id} AND org_id = {org_id} AND period = 'month'"
            )),
            tokens
        );
    }
    assert_eq!(
        db.count("SELECT sum(tokens)::bigint AS n FROM token_usage_daily WHERE org_id = 3"),
        6917529027641081861
    );
    assert_eq!(books::period_differences(&db), 0);
}

#[test]
fn partitions_leave_rows_that_break_a_bound_in_the_default_partition_and_report_them() {
    let db = TestDb::alone();
    insert_tokens_bypassing_bounds(
        &db,
        "(1, 'ai_response', 2000000000000, '2027-02-10T00:00:00Z'),
         (1, 'ai_response', 7, '2027-03-10T00:00:00Z'),
         (1, 'ai_response', 7, 'infinity')",
    );
    let report = run(&db, JobKind::Partitions, "2027-01-15T00:00:00Z").unwrap();
    let created: Vec<String> = serde_json::from_value(report.details["created"].clone()).unwrap();
    assert_eq!(
        created,
        [
            "usage_events_2027_01",
            "usage_events_2027_03",
            "usage_events_2027_04"
        ]
    );
    assert_eq!(
        report.details["skipped"][0]["partition"],
        "usage_events_2027_02"
    );
    assert_eq!(report.details["skipped"][0]["rows_refused"], 1);
    assert_eq!(report.details["out_of_range_rows"], 1);
    assert_eq!(
        db.count("SELECT count(*) AS n FROM usage_events_default"),
        2
    );
    // Over the cap but summable: counted, not set aside.
    run(&db, JobKind::Aggregate, NOW).unwrap();
    assert_eq!(
        db.count("SELECT sum(tokens)::bigint AS n FROM token_usage_daily"),
        2000000000007
    );
    assert_eq!(quarantined(&db, "created_at_out_of_range"), 1);
}

#[derive(QueryableByName)]
struct XidText {
    #[diesel(sql_type = Text)]
    x: String,
}

fn watermark(db: &TestDb) -> u64 {
    diesel::sql_query("SELECT xid::text AS x FROM aggregation_watermark")
        .get_result::<XidText>(&mut db.conn())
        .unwrap()
        .x
        .parse()
        .unwrap()
}

#[test]
fn a_watermark_ahead_of_a_restored_cluster_stops_aggregate_and_the_rebase_counts_each_event_once() {
    let db = TestDb::alone();
    db.execute(
        "SELECT usage_record(1, 'ai_response', 100, p_created_at => '2026-11-22T08:00:00Z');
         SELECT usage_record(1, 'ai_response', 20, p_created_at => '2026-11-22T09:00:00Z');",
    );
    run(&db, JobKind::Aggregate, NOW).unwrap();
    // What a restore into a new cluster looks like: the stored ids (events' and watermark's)
    // come from the old cluster, far ahead of this one; one event the old cluster had not
    // counted yet.
    let offset: u64 = 1_000_000_000;
    let old = watermark(&db) + offset;
    db.execute(&format!(
        "UPDATE usage_events SET recorded_xid = (recorded_xid::text::numeric + {offset})::text::xid8;
         UPDATE aggregation_watermark SET xid = '{old}';
         INSERT INTO usage_events (user_id, kind, tokens, created_at, recorded_xid)
         VALUES (2, 'ai_response', 300, '2026-11-22T10:00:00Z', '{}');",
        old + 5
    ));

    let error = run(&db, JobKind::Aggregate, NOW).unwrap_err().to_string();
    assert!(
        error.contains(&format!("aggregation_watermark.xid = {old}")),
        "{error}"
    );
    assert!(error.contains("current transaction id"), "{error}");
    assert!(error.contains("usage_rebase_watermark()"), "{error}");
    assert!(db.dry_run_job(JobKind::Aggregate, NOW).is_err());

    // An application wrote after the restore: the rebase refuses rather than lose its event.
    db.execute(
        "SELECT usage_record(3, 'ai_response', 4000, p_created_at => '2026-11-22T11:00:00Z')",
    );
    let refused = db
        .conn()
        .batch_execute("SELECT usage_rebase_watermark()")
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("look written since the restore"),
        "{refused}"
    );
    db.execute("DELETE FROM usage_events WHERE user_id = 3");

    assert_eq!(db.count("SELECT usage_rebase_watermark() AS n"), 3);
    assert_eq!(
        db.count("SELECT usage_rebase_watermark() AS n"),
        0,
        "a rerun changes nothing"
    );
    db.execute(
        "SELECT usage_record(3, 'ai_response', 4000, p_created_at => '2026-11-22T11:00:00Z')",
    );
    run(&db, JobKind::Aggregate, NOW).unwrap();
    let tokens = |user: i64| {
        db.count(&format!(
            "SELECT COALESCE(sum(tokens), 0)::bigint AS n FROM token_usage_daily WHERE user_id = {user}"
        ))
    };
    assert_eq!((tokens(1), tokens(2), tokens(3)), (120, 300, 4000));
    assert_eq!(not_yet_aggregated(&db), 0);
    assert_eq!(summary_differences(&db), 0);
    assert_eq!(
        db.count(
            "SELECT count(*) AS n FROM pg_constraint
              WHERE conrelid = 'usage_events'::regclass AND conname LIKE 'usage_events_%_in_range'"
        ),
        7,
        "the bounds are back after the rebase"
    );
}

/// The constraint an insert broke, or the error text when it names none.
fn refusal(error: DieselError) -> Result<String, String> {
    match &error {
        DieselError::DatabaseError(_, info) => info
            .constraint_name()
            .map(str::to_string)
            .ok_or_else(|| info.message().to_string()),
        _ => Err(error.to_string()),
    }
}

#[test]
fn usage_record_refuses_impossible_values_naming_the_bound_a_plain_insert_names() {
    let db = TestDb::alone();
    let cases = [
        (
            "p_created_at => 'infinity'",
            "created_at => 'infinity'",
            "usage_events_created_at_in_range",
        ),
        (
            "p_created_at => '200000-01-01Z'",
            "created_at => '200000-01-01Z'",
            "usage_events_created_at_in_range",
        ),
        (
            "p_tokens => 9223372036854775807",
            "tokens => 9223372036854775807",
            "usage_events_tokens_in_range",
        ),
        (
            "p_messages => 2147483647",
            "messages => 2147483647",
            "usage_events_messages_in_range",
        ),
        (
            "p_bytes => 1000000000001",
            "bytes => 1000000000001",
            "usage_events_bytes_in_range",
        ),
        (
            "p_cost => 'NaN'",
            "cost => 'NaN'",
            "usage_events_cost_in_range",
        ),
        (
            "p_cost => 1000000000.5",
            "cost => 1000000000.5",
            "usage_events_cost_in_range",
        ),
    ];
    for (argument, column, constraint) in cases {
        let (name, value) = column.split_once(" => ").unwrap();
        let recorded =
            diesel::sql_query(format!("SELECT usage_record(1, 'ai_response', {argument})"))
                .execute(&mut db.conn())
                .map_err(refusal);
        let inserted = diesel::sql_query(format!(
            "INSERT INTO usage_events (user_id, kind, {name}) VALUES (1, 'ai_response', {value})"
        ))
        .execute(&mut db.conn())
        .map_err(refusal);
        assert_eq!(
            recorded,
            Err(Ok(constraint.to_string())),
            "usage_record({argument})"
        );
        assert_eq!(inserted, Err(Ok(constraint.to_string())), "INSERT {column}");
    }
    // Past the column types: usage_record still names a bound.
    for argument in [
        "p_prompt_tokens => 9223372036854775807, p_completion_tokens => 9223372036854775807",
        "p_cost => 1e30",
        "p_cost => 'Infinity'",
        "p_cost => '-Infinity'",
    ] {
        let recorded =
            diesel::sql_query(format!("SELECT usage_record(1, 'ai_response', {argument})"))
                .execute(&mut db.conn())
                .map_err(refusal);
        let name = recorded
            .unwrap_err()
            .unwrap_or_else(|m| panic!("{argument}: {m}"));
        assert!(name.starts_with("usage_events_"), "{argument}: {name}");
    }
    assert_eq!(db.count("SELECT count(*) AS n FROM usage_events"), 0);
}

#[test]
fn status_and_metrics_report_the_quarantined_events() {
    let db = TestDb::alone();
    insert_bypassing_bounds(
        &db,
        "INSERT INTO usage_events (user_id, kind, created_at) VALUES (1, 'ai_response', 'infinity')",
    );
    run(&db, JobKind::Aggregate, NOW).unwrap();
    let sample = usage_worker::metrics::sample_database(&mut db.conn()).unwrap();
    let text = usage_worker::metrics::Metrics::new().render(Some(&sample), true, None);
    assert!(
        text.contains("usage_worker_events_quarantined{reason=\"created_at_out_of_range\"} 1"),
        "{text}"
    );
    assert!(text.contains("usage_worker_events_quarantined{reason=\"daily_sum_overflow\"} 0"));

    let stdout = support::stdout_of_success(db.binary().arg("--status"));
    assert!(
        stdout.contains("quarantined events: 1 (created_at_out_of_range 1)"),
        "{stdout}"
    );
}

// ---- the property: any value is refused by a named bound or counted exactly ----

/// Every CHECK constraint of usage_events: the only names a refusal may carry.
fn our_bounds(db: &TestDb) -> Vec<String> {
    diesel::sql_query(
        "SELECT conname::text AS x FROM pg_constraint
          WHERE conrelid = 'usage_events'::regclass AND contype = 'c'",
    )
    .load::<XidText>(&mut db.conn())
    .unwrap()
    .into_iter()
    .map(|r| r.x)
    .collect()
}

#[derive(Debug, Clone)]
struct Event {
    via_usage_record: bool,
    user_id: i64,
    kind: String,
    request_type: String,
    model: String,
    tokens: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
    messages: i32,
    bytes: i64,
    cost: &'static str,
    created_at: &'static str,
}

// Each column is usually valid, so that many cases have events to count, and otherwise one
// of the edges of its type.
fn amount() -> impl Strategy<Value = i64> {
    prop_oneof![
        12 => 0i64..1_000_000,
        1 => Just(0i64),
        1 => Just(1_000_000_000_000i64),
        1 => prop::sample::select(vec![i64::MIN, -1, 1_000_000_000_001, 1 << 62, i64::MAX]),
        1 => any::<i64>(),
    ]
}

fn text(valid: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        12 => Just(valid.to_string()),
        1 => Just(String::new()),
        1 => Just("x".repeat(70)),
        1 => Just("Ab c;'--".to_string()),
        1 => Just("é".repeat(300)),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    let strings = (text("ai_response"), text("chat"), text("gpt-4o"));
    let amounts = (amount(), amount(), amount(), amount());
    let messages = prop_oneof![
        12 => 0..1_000_000i32,
        1 => Just(1_000_000),
        1 => prop::sample::select(vec![i32::MIN, -1, 1_000_001, i32::MAX]),
    ];
    let cost = prop_oneof![
        6 => prop::sample::select(vec!["0", "0.00000001", "123.456789", "1000000000"]),
        1 => prop::sample::select(vec![
            "1000000000.00000001", "-0.01", "NaN", "Infinity", "-Infinity", "1e30",
            "99999999999.99999999",
        ]),
    ];
    let created_at = prop_oneof![
        6 => prop::sample::select(vec![
            "1990-01-01 00:00:00+00", "2026-11-22 12:00:00+00", "2026-11-22 23:59:59.999999+00",
            "2199-12-31 23:59:59.999999+00",
        ]),
        1 => prop::sample::select(vec![
            "infinity", "-infinity", "4713-01-01 00:00:00+00 BC", "1989-12-31 23:59:59.999999+00",
            "2200-01-01 00:00:00+00", "200000-01-01 00:00:00+00",
        ]),
    ];
    let user_id = prop::sample::select(vec![i64::MIN, 0, 1, 2, i64::MAX]);
    (
        any::<bool>(),
        user_id,
        strings,
        amounts,
        messages,
        cost,
        created_at,
    )
        .prop_map(
            |(
                via,
                user_id,
                (kind, request_type, model),
                (t, p, c, b),
                messages,
                cost,
                created_at,
            )| {
                Event {
                    via_usage_record: via,
                    user_id,
                    kind,
                    request_type,
                    model,
                    tokens: t,
                    prompt_tokens: p,
                    completion_tokens: c,
                    messages,
                    bytes: b,
                    cost,
                    created_at,
                }
            },
        )
}

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn insert_sql(e: &Event) -> String {
    if e.via_usage_record {
        format!(
            "SELECT usage_record({}, {}, {}, {}, {}, {}, {}, {}::numeric, {}, {}, '{{}}', {}::timestamptz)",
            e.user_id,
            quote(&e.kind),
            e.tokens,
            e.prompt_tokens,
            e.completion_tokens,
            e.messages,
            e.bytes,
            quote(e.cost),
            quote(&e.request_type),
            quote(&e.model),
            quote(e.created_at)
        )
    } else {
        format!(
            "INSERT INTO usage_events (user_id, kind, request_type, model, tokens, prompt_tokens,
                                       completion_tokens, messages, bytes, cost, created_at)
             VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {}, {}::numeric, {}::timestamptz)",
            e.user_id,
            quote(&e.kind),
            quote(&e.request_type),
            quote(&e.model),
            e.tokens,
            e.prompt_tokens,
            e.completion_tokens,
            e.messages,
            e.bytes,
            quote(e.cost),
            quote(e.created_at)
        )
    }
}

/// One amount of an event, as the summary sums it.
type Amount = fn(&Event) -> i128;

/// The tokens the stored row holds: usage_record stores at least prompt + completion.
fn stored_tokens(e: &Event) -> i128 {
    if e.via_usage_record {
        i128::from(e.tokens).max(i128::from(e.prompt_tokens) + i128::from(e.completion_tokens))
    } else {
        i128::from(e.tokens)
    }
}

fn summary_total(db: &TestDb, column: &str) -> i128 {
    let row: XidText = diesel::sql_query(format!(
        "SELECT COALESCE(sum({column}), 0)::text AS x FROM token_usage_daily"
    ))
    .get_result(&mut db.conn())
    .unwrap();
    row.x.parse().unwrap()
}

/// Checks the property for one case; returns how many events were accepted.
fn check_events(events: &[Event]) -> usize {
    let db = TestDb::alone();
    let bounds = our_bounds(&db);
    let mut accepted = Vec::new();
    for e in events {
        match diesel::sql_query(insert_sql(e))
            .execute(&mut db.conn())
            .map_err(refusal)
        {
            Ok(_) => accepted.push(e.clone()),
            Err(Ok(name)) => assert!(bounds.contains(&name), "{e:?} refused by {name}"),
            // Only a plain INSERT of a cost numeric(20, 8) cannot hold fails on the type.
            Err(Err(message)) => assert!(
                !e.via_usage_record
                    && message.contains("numeric field overflow")
                    && ["Infinity", "-Infinity", "1e30"].contains(&e.cost),
                "{e:?} refused without naming a bound: {message}"
            ),
        }
    }
    run(&db, JobKind::Aggregate, NOW).unwrap_or_else(|e| panic!("aggregate: {e}"));
    assert_eq!(not_yet_aggregated(&db), 0);
    assert_eq!(db.count("SELECT count(*) AS n FROM usage_quarantine"), 0);
    assert_eq!(summary_total(&db, "events"), accepted.len() as i128);
    let amounts: [(&str, Amount); 4] = [
        ("tokens", stored_tokens),
        ("prompt_tokens", |e| i128::from(e.prompt_tokens)),
        ("messages", |e| i128::from(e.messages)),
        ("bytes", |e| i128::from(e.bytes)),
    ];
    for (column, amount) in amounts {
        assert_eq!(
            summary_total(&db, column),
            accepted.iter().map(amount).sum::<i128>(),
            "summary {column}"
        );
    }
    assert_eq!(summary_differences(&db), 0);
    for (kind, now) in [
        (JobKind::Partitions, NOW),
        (JobKind::ResetDaily, LATER),
        (JobKind::Stats, LATER),
        (JobKind::Retention, NOW),
        (JobKind::Aggregate, NOW),
    ] {
        run(&db, kind, now).unwrap_or_else(|e| panic!("{kind} after {events:?}: {e}"));
    }
    accepted.len()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn every_event_is_refused_by_a_named_bound_or_counted_exactly_and_no_job_gets_stuck(
        events in prop::collection::vec(event(), 1..8)
    ) {
        check_events(&events);
    }
}

#[test]
fn the_property_counts_real_events_not_only_refusals() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 6,
        ..ProptestConfig::default()
    });
    let accepted = std::cell::Cell::new(0);
    runner
        .run(&prop::collection::vec(event(), 4..8), |events| {
            accepted.set(accepted.get() + check_events(&events));
            Ok(())
        })
        .unwrap();
    assert!(accepted.get() > 0, "every generated event was refused");
}

#[test]
fn a_limit_or_price_that_is_not_a_finite_number_is_refused_naming_the_bound() {
    let db = TestDb::new();
    let mut conn = db.conn();
    let refused = |conn: &mut PgConnection, sql: &str| -> String {
        match conn.batch_execute(sql) {
            Err(DieselError::DatabaseError(_, info)) => {
                info.constraint_name().unwrap_or_default().to_string()
            }
            other => panic!("{sql}: expected a refusal, got {other:?}"),
        }
    };
    conn.batch_execute("INSERT INTO plans (id, name) VALUES (9, 'hostile')")
        .unwrap();
    for value in ["NaN", "Infinity"] {
        let limit = format!(
            "INSERT INTO plan_limits (plan_id, metric, period, kind, max_value)
             VALUES (9, 'tokens', 'day', '', '{value}')"
        );
        assert_eq!(refused(&mut conn, &limit), "plan_limits_max_value_finite");
        let price =
            format!("INSERT INTO prices (kind, per_1k_tokens) VALUES ('ai_response', '{value}')");
        assert_eq!(refused(&mut conn, &price), "prices_finite");
    }
}
