//! The aggregate job and the reset jobs together: events are added into quota periods by the
//! aggregate transaction, periods are closed and reconciled by reset-daily / reset-monthly.
//! Invariant 1 (closed period totals equal the raw sums of their range) and invariant 2
//! (periods tile time per user and period kind).
//!
//! The test runs alone on its cluster ([`TestDb::alone`]): a transaction open anywhere in
//! the cluster would hold the aggregation watermark back.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text, Timestamptz};
use usage_worker::jobs::{JobKind, RunOpts};

use crate::support::quota::add_new_events_to_periods;
use crate::support::{TestDb, at};

fn run(db: &TestDb, kind: JobKind, now: &str) -> serde_json::Value {
    db.run_job(kind, now, &RunOpts::default())
        .unwrap_or_else(|e| panic!("{kind} at {now}: {e}"))
        .details
}

#[derive(QueryableByName, Debug)]
struct Row {
    #[diesel(sql_type = BigInt)]
    user_id: i64,
    #[diesel(sql_type = Text)]
    period: String,
    #[diesel(sql_type = Timestamptz)]
    period_start: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    period_end: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    status: String,
}

/// Periods whose totals differ from the raw events of their range (all of them aggregated),
/// or whose per-kind rows do not add up to the period.
const MISMATCHED_PERIODS: &str = "
    SELECT count(*) AS n
      FROM usage_periods p
      LEFT JOIN LATERAL (SELECT count(*) AS requests, COALESCE(sum(messages), 0) AS messages,
                                COALESCE(sum(tokens), 0) AS tokens, COALESCE(sum(bytes), 0) AS bytes,
                                COALESCE(sum(cost), 0) AS cost
                           FROM usage_events e
                          WHERE e.user_id = p.user_id AND e.created_at >= p.period_start
                            AND e.created_at < p.period_end) r ON true
      LEFT JOIN LATERAL (SELECT COALESCE(sum(requests), 0) AS requests, COALESCE(sum(tokens), 0) AS tokens,
                                COALESCE(sum(cost), 0) AS cost
                           FROM usage_period_kind_totals k
                          WHERE k.user_id = p.user_id AND k.period = p.period
                            AND k.period_start = p.period_start) k ON true
     WHERE (p.requests, p.messages, p.tokens, p.bytes, p.cost)
           IS DISTINCT FROM (r.requests, r.messages, r.tokens, r.bytes, r.cost)
        OR (k.requests, k.tokens, k.cost) IS DISTINCT FROM (p.requests, p.tokens, p.cost)";

#[test]
fn aggregate_then_reset_closes_periods_whose_totals_equal_the_raw_events_and_tile_time() {
    let db = TestDb::alone();
    db.execute(
        "INSERT INTO users (id, email, timezone, billing_anchor_day) VALUES
             (1, 'a@example.com', 'Europe/Berlin', NULL),
             (2, 'b@example.com', 'America/New_York', 31),
             (3, 'c@example.com', 'Asia/Kolkata', 15),
             (4, 'd@example.com', 'Australia/Lord_Howe', NULL),
             (5, 'e@example.com', 'Mars/Olympus_Mons', NULL);
         -- Every user, every 37 minutes from 2025-10-24 to 2025-11-04: across Berlin's 25-hour
         -- day (10-26), New York's (11-02) and three month boundaries in five zones.
         INSERT INTO usage_events (user_id, kind, tokens, messages, bytes, cost, created_at)
         SELECT u, (ARRAY['ai_response', 'message_sent', 'file_upload'])[1 + n % 3], n % 500, n % 2,
                n * 10, (n % 7) * 0.013, '2025-10-24T00:00:00Z'::timestamptz + n * interval '37 minutes'
           FROM generate_series(1, 5) AS u CROSS JOIN generate_series(0, 428) AS n;",
    );
    let first = run(&db, JobKind::Aggregate, "2025-10-29T00:00:00Z");
    assert_eq!(first["events"], 5 * 429, "{first}");

    // Resets at several instants, as the schedule would (plus a late event in between).
    for now in [
        "2025-10-27T00:00:00Z",
        "2025-10-31T12:00:00Z",
        "2025-11-02T06:00:00Z",
    ] {
        run(&db, JobKind::ResetDaily, now);
        run(&db, JobKind::ResetMonthly, now);
    }
    db.execute(
        "INSERT INTO usage_events (user_id, kind, tokens, cost, created_at)
         VALUES (1, 'ai_response', 1000, 1, '2025-10-26T12:00:00Z'),
                (3, 'image_generation', 0, 0.04, '2025-10-14T20:00:00Z')",
    );
    run(&db, JobKind::Aggregate, "2025-11-04T18:00:00Z");
    run(&db, JobKind::ResetDaily, "2025-11-04T18:00:00Z");
    run(&db, JobKind::ResetMonthly, "2025-11-04T18:00:00Z");

    assert_eq!(
        db.count(MISMATCHED_PERIODS),
        0,
        "invariant 1: a period's totals differ from its raw events"
    );
    assert_eq!(
        db.count("SELECT count(*) AS n FROM usage_events e CROSS JOIN (VALUES ('day'), ('month')) AS k (period)
                   WHERE NOT EXISTS (
                      SELECT 1 FROM usage_periods p WHERE p.user_id = e.user_id AND p.period = k.period
                         AND p.period_start <= e.created_at AND p.period_end > e.created_at)"),
        0,
        "an event is in no period"
    );
    // Without manual resets every period has its natural bounds in the user's zone.
    assert_eq!(
        db.count("SELECT count(*) AS n FROM usage_periods p JOIN users u ON u.id = p.user_id
                   CROSS JOIN LATERAL usage_period_bounds(u.timezone, u.billing_anchor_day, p.period, p.period_start) b
                   WHERE (b.period_start, b.period_end) <> (p.period_start, p.period_end)"),
        0,
        "a period does not run from one natural boundary to the next"
    );

    let rows: Vec<Row> = diesel::sql_query(
        "SELECT user_id, period, period_start, period_end, status FROM usage_periods
          ORDER BY user_id, period, period_start",
    )
    .load(&mut db.conn())
    .unwrap();
    for pair in rows.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        // Consecutive periods meet; a gap is time without events (no empty rows are kept
        // for inactive users), checked above by every event being in a period.
        if a.user_id == b.user_id && a.period == b.period {
            assert!(
                a.period_end <= b.period_start,
                "invariant 2: {a:?} overlaps {b:?}"
            );
        }
    }
    // Users active every day of the range have no gaps in it.
    let berlin_days: Vec<&Row> = rows
        .iter()
        .filter(|r| r.user_id == 1 && r.period == "day")
        .collect();
    for pair in berlin_days.windows(2) {
        assert_eq!(
            pair[0].period_end, pair[1].period_start,
            "gap in an active user's days"
        );
    }
    // Every period that ended by the last reset is closed; the current ones are open.
    for row in &rows {
        let ended = row.period_end <= at("2025-11-04T18:00:00Z");
        assert_eq!(row.status == "closed", ended, "{row:?}");
    }
    // Berlin's day of the clock change is 25 hours long; the unknown zone runs on UTC.
    assert!(rows.iter().any(|r| r.user_id == 1
        && r.period == "day"
        && r.period_start == at("2025-10-25T22:00:00Z")
        && r.period_end == at("2025-10-26T23:00:00Z")));
    assert!(rows.iter().any(|r| r.user_id == 5
        && r.period == "day"
        && r.period_start == at("2025-10-26T00:00:00Z")));
    // Kolkata's anchor 15: the late event of 2025-10-15 01:30 local lands in the period from the 15th.
    assert!(rows.iter().any(|r| r.user_id == 3
        && r.period == "month"
        && r.period_start == at("2025-10-14T18:30:00Z")
        && r.period_end == at("2025-11-14T18:30:00Z")));
}

/// Events whose local day a period boundary cuts — a manual reset at noon, a clock set back
/// or forward at midnight (Santiago) — arrive in one batch with ordinary ones; each lands in
/// the one period that contains it, and the split periods stay as they were.
#[test]
fn one_batch_across_a_manual_reset_and_midnight_clock_changes_lands_every_event_in_its_period() {
    let db = TestDb::new();
    db.execute(
        "INSERT INTO users (id, email, timezone, billing_anchor_day) VALUES
             (1, 'a@example.com', 'Europe/Berlin', NULL),
             (2, 'b@example.com', 'America/Santiago', 6),
             (3, 'c@example.com', 'America/Santiago', NULL),
             (4, 'd@example.com', 'America/Havana', 2);
         INSERT INTO usage_events (user_id, kind, tokens, cost, created_at)
         VALUES (1, 'ai_response', 10, 0.01, '2027-01-10T08:00:00Z');",
    );
    add_new_events_to_periods(&mut db.conn());
    for kind in [JobKind::ResetDaily, JobKind::ResetMonthly] {
        let opts = RunOpts {
            user_id: Some(1),
            ..RunOpts::default()
        };
        kind.run(&db.ctx(), &mut db.conn(), at("2027-01-10T12:00:00Z"), &opts)
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
    }
    // Both sides of the reset in one batch; Santiago and Havana every 20 minutes around
    // clock changes at local midnight (Santiago back on 2025-04-06 and forward on 2025-09-07;
    // Havana back from 01:00 to a second midnight on 2025-11-02).
    db.execute(
        "INSERT INTO usage_events (user_id, kind, tokens, cost, created_at)
         VALUES (1, 'ai_response', 1, 0.001, '2027-01-10T09:00:00Z'),
                (1, 'message_sent', 2, 0.002, '2027-01-10T13:00:00Z'),
                (1, 'ai_response', 4, 0.004, '2027-01-10T22:30:00Z'),
                (1, 'ai_response', 8, 0.008, '2027-01-11T09:00:00Z');
         INSERT INTO usage_events (user_id, kind, tokens, cost, created_at)
         SELECT u, (ARRAY['ai_response', 'message_sent'])[1 + n % 2], n, n * 0.001, t + n * interval '20 minutes'
           FROM generate_series(2, 4) AS u
          CROSS JOIN (VALUES ('2025-04-05T00:00:00Z'::timestamptz), ('2025-09-06T00:00:00Z'),
                             ('2025-11-01T00:00:00Z')) AS s (t)
          CROSS JOIN generate_series(0, 216) AS n;",
    );
    add_new_events_to_periods(&mut db.conn());

    assert_eq!(
        db.count(MISMATCHED_PERIODS),
        0,
        "a period's totals differ from its raw events"
    );
    assert_eq!(
        db.count("SELECT count(*) AS n FROM usage_events e CROSS JOIN (VALUES ('day'), ('month')) AS k (period)
                   WHERE (SELECT count(*) FROM usage_periods p
                           WHERE p.user_id = e.user_id AND p.period = k.period
                             AND p.period_start <= e.created_at AND p.period_end > e.created_at) <> 1"),
        0,
        "an event is in no period or in two"
    );
    let split: Vec<Row> = diesel::sql_query(
        "SELECT user_id, period, period_start, period_end, status FROM usage_periods
          WHERE user_id = 1 AND '2027-01-10T12:00:00Z' IN (period_start, period_end)
          ORDER BY period, period_start",
    )
    .load(&mut db.conn())
    .unwrap();
    assert_eq!(split.len(), 4, "the reset's periods changed: {split:?}");
    // The 23- and 25-hour local days keep their natural bounds.
    assert_eq!(
        db.count("SELECT count(*) AS n FROM usage_periods p JOIN users u ON u.id = p.user_id
                   CROSS JOIN LATERAL usage_period_bounds(u.timezone, u.billing_anchor_day, p.period, p.period_start) b
                   WHERE p.user_id IN (2, 3, 4)
                     AND (b.period_start, b.period_end) <> (p.period_start, p.period_end)"),
        0,
        "a period does not run from one natural boundary to the next"
    );
}
