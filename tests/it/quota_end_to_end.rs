//! The aggregate job and the reset jobs together: events are added into their subject's quota
//! periods (a user's personal usage, an organization's shared usage) by the aggregate
//! transaction, periods are closed and reconciled by reset-daily / reset-monthly.
//! Invariant 1 (closed period totals equal the raw sums of their range) and invariant 2
//! (periods tile time per subject and period kind).
//!
//! The first test runs alone on its cluster ([`TestDb::alone`]): a transaction open anywhere
//! in the cluster would hold the aggregation watermark back.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text, Timestamptz};
use usage_worker::jobs::{JobKind, RunOpts};

use crate::support::books::{
    events_not_in_one_period, kind_total_differences, period_differences, periods_not_natural,
};
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
    #[diesel(sql_type = BigInt)]
    org_id: i64,
    #[diesel(sql_type = Text)]
    period: String,
    #[diesel(sql_type = Timestamptz)]
    period_start: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    period_end: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    status: String,
}

impl Row {
    /// Whether this is a period of kind `period` of the subject keyed (`user_id`, `org_id`).
    fn of(&self, (user_id, org_id): (i64, i64), period: &str) -> bool {
        (self.user_id, self.org_id) == (user_id, org_id) && self.period == period
    }
}

fn period_rows(db: &TestDb, condition: &str) -> Vec<Row> {
    diesel::sql_query(format!(
        "SELECT user_id, org_id, period, period_start, period_end, status FROM usage_periods
          WHERE {condition} ORDER BY user_id, org_id, period, period_start"
    ))
    .load(&mut db.conn())
    .unwrap()
}

/// Invariant 1: every period's totals, and its totals per kind, are the raw sums of its
/// subject's events in its range; and every event is in exactly one period of each kind.
fn assert_periods_hold_their_events(db: &TestDb) {
    assert_eq!(
        period_differences(db),
        0,
        "invariant 1: a period's totals differ from its raw events"
    );
    assert_eq!(
        kind_total_differences(db),
        0,
        "a period's totals per kind differ from its raw events"
    );
    assert_eq!(
        events_not_in_one_period(db),
        0,
        "an event is in no period or in two"
    );
}

/// Users 1 to 5 in five zones, user 5's unknown; organization 1 in Tokyo billing from the
/// 31st (member user 1) and organization 2 in Los Angeles (member user 2). Every user, and
/// every organization through its member, every 37 minutes from 2025-10-24 to 2025-11-04:
/// across Berlin's 25-hour day (10-26), New York's and Los Angeles's (11-02) and three month
/// boundaries in seven zones.
fn seven_subjects_over_eleven_days(db: &TestDb) {
    db.execute(
        "INSERT INTO users (id, email, timezone, billing_anchor_day) VALUES
             (1, 'a@example.com', 'Europe/Berlin', NULL),
             (2, 'b@example.com', 'America/New_York', 31),
             (3, 'c@example.com', 'Asia/Kolkata', 15),
             (4, 'd@example.com', 'Australia/Lord_Howe', NULL),
             (5, 'e@example.com', 'Mars/Olympus_Mons', NULL);
         INSERT INTO organizations (id, name, timezone, billing_anchor_day) VALUES
             (1, 'one', 'Asia/Tokyo', 31), (2, 'two', 'America/Los_Angeles', NULL);
         INSERT INTO organization_members (org_id, user_id, role) VALUES
             (1, 1, 'owner'), (2, 2, 'owner');
         INSERT INTO usage_events (user_id, org_id, kind, tokens, messages, bytes, cost, created_at)
         SELECT s.user_id, s.org_id, (ARRAY['ai_response', 'message_sent', 'file_upload'])[1 + n % 3],
                n % 500, n % 2, n * 10, (n % 7) * 0.013,
                '2025-10-24T00:00:00Z'::timestamptz + n * interval '37 minutes'
           FROM (VALUES (1, NULL), (2, NULL), (3, NULL), (4, NULL), (5, NULL), (1, 1), (2, 2))
                AS s (user_id, org_id)
          CROSS JOIN generate_series(0, 428) AS n;",
    );
}

#[test]
fn aggregate_then_reset_closes_every_subjects_periods_with_totals_equal_to_its_events_tiling_time()
{
    let db = TestDb::alone();
    seven_subjects_over_eleven_days(&db);
    let first = run(&db, JobKind::Aggregate, "2025-10-29T00:00:00Z");
    assert_eq!(first["events"], 7 * 429, "{first}");

    // Resets at several instants, as the schedule would (plus late events in between).
    for now in [
        "2025-10-27T00:00:00Z",
        "2025-10-31T12:00:00Z",
        "2025-11-02T06:00:00Z",
    ] {
        run(&db, JobKind::ResetDaily, now);
        run(&db, JobKind::ResetMonthly, now);
    }
    db.execute(
        "INSERT INTO usage_events (user_id, org_id, kind, tokens, cost, created_at)
         VALUES (1, NULL, 'ai_response', 1000, 1, '2025-10-26T12:00:00Z'),
                (3, NULL, 'image_generation', 0, 0.04, '2025-10-14T20:00:00Z'),
                (2, 2, 'ai_response', 500, 0.5, '2025-10-26T12:00:00Z')",
    );
    run(&db, JobKind::Aggregate, "2025-11-04T18:00:00Z");
    run(&db, JobKind::ResetDaily, "2025-11-04T18:00:00Z");
    run(&db, JobKind::ResetMonthly, "2025-11-04T18:00:00Z");

    assert_periods_hold_their_events(&db);
    // Without manual resets every period has its natural bounds in its subject's zone.
    assert_eq!(
        periods_not_natural(&db),
        0,
        "a period does not run from one natural boundary to the next"
    );
    let rows = period_rows(&db, "true");
    assert_periods_tile_time(&rows);
    assert_zones_and_anchors_shape_the_periods(&rows);
}

/// Invariant 2: consecutive periods of a subject meet (a gap is time without events: no empty
/// rows are kept for inactive subjects, and every event is in a period); the subjects active
/// every day have no gaps; every period that ended by the last reset is closed, the current
/// ones are open.
fn assert_periods_tile_time(rows: &[Row]) {
    for pair in rows.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.of((b.user_id, b.org_id), &b.period) {
            assert!(
                a.period_end <= b.period_start,
                "invariant 2: {a:?} overlaps {b:?}"
            );
        }
    }
    for subject in [(1, 0), (0, 2)] {
        let days: Vec<&Row> = rows.iter().filter(|r| r.of(subject, "day")).collect();
        for pair in days.windows(2) {
            assert_eq!(
                pair[0].period_end, pair[1].period_start,
                "gap in an active subject's days: {subject:?}"
            );
        }
    }
    for row in rows {
        let ended = row.period_end <= at("2025-11-04T18:00:00Z");
        assert_eq!(row.status == "closed", ended, "{row:?}");
    }
}

/// Each subject's days and months follow its own zone and billing anchor.
fn assert_zones_and_anchors_shape_the_periods(rows: &[Row]) {
    let has = |subject, period, start: &str, end: Option<&str>| {
        rows.iter().any(|r| {
            r.of(subject, period)
                && r.period_start == at(start)
                && end.is_none_or(|end| r.period_end == at(end))
        })
    };
    // Berlin's day of the clock change is 25 hours long; the unknown zone runs on UTC.
    assert!(has(
        (1, 0),
        "day",
        "2025-10-25T22:00:00Z",
        Some("2025-10-26T23:00:00Z")
    ));
    assert!(has((5, 0), "day", "2025-10-26T00:00:00Z", None));
    // Kolkata's anchor 15: the late event of 2025-10-15 01:30 local lands in the period from the 15th.
    assert!(has(
        (3, 0),
        "month",
        "2025-10-14T18:30:00Z",
        Some("2025-11-14T18:30:00Z")
    ));
    // Los Angeles's day of the clock change is 25 hours long, whoever of its members spends.
    assert!(has(
        (0, 2),
        "day",
        "2025-11-02T07:00:00Z",
        Some("2025-11-03T08:00:00Z")
    ));
    // Tokyo's anchor 31 falls on the last day of a shorter month: October 31 to November 30.
    assert!(has(
        (0, 1),
        "month",
        "2025-10-30T15:00:00Z",
        Some("2025-11-29T15:00:00Z")
    ));
}

/// Events whose local day a period boundary cuts — a manual reset at noon, a clock set back
/// or forward at midnight (Santiago) — arrive in one batch with ordinary ones; each lands in
/// the one period of its subject that contains it, and the split periods stay as they were.
#[test]
fn one_batch_across_a_manual_reset_and_midnight_clock_changes_lands_every_event_in_its_period() {
    let db = TestDb::new();
    db.execute(
        "INSERT INTO users (id, email, timezone, billing_anchor_day) VALUES
             (1, 'a@example.com', 'Europe/Berlin', NULL),
             (2, 'b@example.com', 'America/Santiago', 6),
             (3, 'c@example.com', 'America/Santiago', NULL),
             (4, 'd@example.com', 'America/Havana', 2);
         INSERT INTO organizations (id, name, timezone, billing_anchor_day)
              VALUES (5, 'five', 'America/Santiago', 6);
         INSERT INTO organization_members (org_id, user_id, role) VALUES (5, 3, 'owner');
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
    // Havana back from 01:00 to a second midnight on 2025-11-02), personally and, for user 3,
    // in organization 5 too.
    db.execute(
        "INSERT INTO usage_events (user_id, kind, tokens, cost, created_at)
         VALUES (1, 'ai_response', 1, 0.001, '2027-01-10T09:00:00Z'),
                (1, 'message_sent', 2, 0.002, '2027-01-10T13:00:00Z'),
                (1, 'ai_response', 4, 0.004, '2027-01-10T22:30:00Z'),
                (1, 'ai_response', 8, 0.008, '2027-01-11T09:00:00Z');
         INSERT INTO usage_events (user_id, org_id, kind, tokens, cost, created_at)
         SELECT s.user_id, s.org_id, (ARRAY['ai_response', 'message_sent'])[1 + n % 2], n,
                n * 0.001, t + n * interval '20 minutes'
           FROM (VALUES (2, NULL), (3, NULL), (4, NULL), (3, 5)) AS s (user_id, org_id)
          CROSS JOIN (VALUES ('2025-04-05T00:00:00Z'::timestamptz), ('2025-09-06T00:00:00Z'),
                             ('2025-11-01T00:00:00Z')) AS c (t)
          CROSS JOIN generate_series(0, 216) AS n;",
    );
    add_new_events_to_periods(&mut db.conn());

    assert_periods_hold_their_events(&db);
    let split = period_rows(
        &db,
        "user_id = 1 AND org_id = 0 AND '2027-01-10T12:00:00Z' IN (period_start, period_end)",
    );
    assert_eq!(split.len(), 4, "the reset's periods changed: {split:?}");
    // The 23- and 25-hour local days keep their natural bounds.
    assert_eq!(
        db.count(
            "SELECT count(*) AS n FROM usage_periods p
               JOIN usage_subjects s ON (s.user_id, s.org_id) = (p.user_id, p.org_id)
              CROSS JOIN LATERAL usage_period_bounds(s.timezone, s.billing_anchor_day, p.period,
                                                     p.period_start) b
              WHERE (p.user_id, p.org_id) <> (1, 0)
                AND (b.period_start, b.period_end) <> (p.period_start, p.period_end)"
        ),
        0,
        "a period does not run from one natural boundary to the next"
    );
    assert_eq!(
        db.count("SELECT count(*) AS n FROM usage_periods WHERE org_id = 5"),
        db.count("SELECT count(*) AS n FROM usage_periods WHERE user_id = 2 AND org_id = 0"),
        "organization 5 counts on the days and months of user 2, in its zone and anchor"
    );
}
