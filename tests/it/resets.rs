//! reset-daily / reset-monthly rollover against a real database, for both kinds of subject (a
//! user's personal usage and an organization's shared usage): each subject's periods close at
//! its own local midnight and billing anchor with totals equal to its raw events, downtime is
//! caught up, drift is repaired and reported, unknown zones count in UTC.

use usage_worker::jobs::{JobKind, JobReport, RunOpts};
use usage_worker::subject::Subject;

use crate::support::quota::{
    PeriodRow, add_new_events_to_periods, assert_tiled_and_exact, event, open_period, periods,
    spend,
};
use crate::support::{TestDb, at};

fn reset(db: &TestDb, kind: JobKind, now: &str) -> JobReport {
    db.run_job(kind, now, &RunOpts::default()).unwrap()
}

/// How many periods of `subject`'s kind (users' or organizations') a rollover run closed.
fn closed_of_kind(report: &JobReport, subject: Subject) -> i64 {
    let all = report.details["closed"].as_i64().unwrap();
    let of_orgs = report.details["closed_org_periods"].as_i64().unwrap();
    match subject {
        Subject::User(_) => all - of_orgs,
        Subject::Org(_) => of_orgs,
    }
}

/// Plan 1 limits tokens. Users 0 — a legal application user id — (UTC), 1 (Berlin) and 2
/// (New York) are the members of the organizations. Then two subjects of one kind on plan 1:
/// the first in Tokyo billing from the 15th, the second in Los Angeles on calendar months —
/// users 11 and 12, or organizations 1 (owner user 0, member user 1) and 2 (owner user 2,
/// admin user 1).
fn two_subjects(db: &TestDb, kind: fn(i64) -> Subject) -> [Subject; 2] {
    db.execute(
        "INSERT INTO plans (id, name) VALUES (1, 'team');
         INSERT INTO plan_limits (plan_id, metric, period, kind, max_value)
         VALUES (1, 'tokens', 'month', '', 100000), (1, 'tokens', 'day', '', 5000)",
    );
    db.add_user(0, "UTC");
    db.add_user(1, "Europe/Berlin");
    db.add_user(2, "America/New_York");
    let subjects = match kind(0) {
        Subject::User(_) => [Subject::User(11), Subject::User(12)],
        Subject::Org(_) => [Subject::Org(1), Subject::Org(2)],
    };
    db.add_subject(subjects[0], "Asia/Tokyo", Some(15), Some(1));
    db.add_subject(subjects[1], "America/Los_Angeles", None, Some(1));
    if let Subject::Org(_) = kind(0) {
        db.add_member(1, 0, "owner");
        db.add_member(1, 1, "member");
        db.add_member(2, 2, "owner");
        db.add_member(2, 1, "admin");
    }
    subjects
}

/// Adds the events of `spends` — (subject, member, tokens, instant): spent by the user
/// personally, or by the member in the organization — and with organizations the members'
/// `personal` events (user, tokens, instant); aggregates them, and opens each subject's
/// natural `period` at each instant where aggregation has not.
fn books(
    db: &TestDb,
    period: &str,
    spends: &[(Subject, i64, i64, &str)],
    personal: &[(i64, i64, &str)],
) {
    for &(subject, member, tokens, created_at) in spends {
        spend(db, subject, member, "ai_response", tokens, created_at);
    }
    if let Some((Subject::Org(_), ..)) = spends.first() {
        for &(user, tokens, created_at) in personal {
            event(db, user, None, "ai_response", tokens, created_at);
        }
    }
    add_new_events_to_periods(&mut db.conn());
    for &(subject, _, _, instant) in spends {
        open_period(db, subject, period, instant);
    }
}

fn bounds(rows: &[PeriodRow]) -> Vec<(String, String, &str)> {
    rows.iter()
        .map(|p| {
            (
                p.period_start.to_rfc3339(),
                p.period_end.to_rfc3339(),
                p.status.as_str(),
            )
        })
        .collect()
}

/// `(start, end, status)` as [`bounds`] gives it.
fn period(start: &str, end: &str, status: &'static str) -> (String, String, &'static str) {
    (format!("{start}+00:00"), format!("{end}+00:00"), status)
}

fn closed_totals(rows: &[PeriodRow]) -> Vec<(i64, i64)> {
    rows.iter()
        .filter(|p| p.status == "closed")
        .map(|p| (p.requests, p.tokens))
        .collect()
}

#[test]
fn two_subjects_months_close_at_their_own_zone_and_billing_anchor() {
    for kind in [Subject::User, Subject::Org] {
        let db = TestDb::new();
        let [tokyo, los_angeles] = two_subjects(&db, kind);
        // Tokyo, anchor 15: the month ends 2027-03-15 00:00 JST = 03-14 15:00Z. Los Angeles:
        // February ends 2027-03-01 00:00 PST = 08:00Z. Members spend personally too.
        let spends = [
            (tokyo, 0, 100, "2027-02-20T00:00:00Z"),
            (tokyo, 1, 10, "2027-03-14T14:59:59Z"),
            (tokyo, 1, 1000, "2027-03-14T15:00:00Z"),
            (los_angeles, 2, 200, "2027-02-10T00:00:00Z"),
            (los_angeles, 1, 20, "2027-03-01T07:59:59Z"),
            (los_angeles, 2, 2000, "2027-03-01T08:00:00Z"),
        ];
        let personal = [
            (0, 5, "2027-02-20T01:00:00Z"),
            (1, 7, "2027-03-01T12:00:00Z"),
        ];
        books(&db, "month", &spends, &personal);

        assert_los_angeles_month_closes_first(&db, [tokyo, los_angeles]);
        assert_tokyo_month_closes_on_its_anchor(&db, tokyo);

        let report = reset(&db, JobKind::ResetMonthly, "2027-04-15T00:00:00Z");
        assert_eq!(closed_of_kind(&report, tokyo), 2, "{report:?}");
        let months = |subject| closed_totals(&periods(&mut db.conn(), subject, "month"));
        assert_eq!(months(los_angeles), vec![(2, 220), (1, 2000)]);
        assert_eq!(months(tokyo), vec![(2, 110), (1, 1000)]);
        for subject in [tokyo, los_angeles] {
            assert_tiled_and_exact(&db, subject, "month");
        }
        if let Subject::Org(_) = tokyo {
            // Members' personal months count their personal events only: user 0's own rows
            // are not organization 1's (February, then the March its activity opened).
            assert_eq!(months(Subject::User(0)), vec![(1, 5), (0, 0)]);
            assert_eq!(months(Subject::User(1)), vec![(1, 7)]);
            for user in [0, 1, 2] {
                assert_tiled_and_exact(&db, Subject::User(user), "month");
            }
        }
    }
}

/// Los Angeles's February closes at its midnight, not a minute before; Tokyo's month goes on.
fn assert_los_angeles_month_closes_first(db: &TestDb, [tokyo, los_angeles]: [Subject; 2]) {
    let month = JobKind::ResetMonthly;
    assert_eq!(
        closed_of_kind(&reset(db, month, "2027-03-01T07:59:00Z"), tokyo),
        0
    );
    let report = reset(db, month, "2027-03-01T08:00:00Z");
    assert_eq!(closed_of_kind(&report, tokyo), 1, "{report:?}");
    assert_eq!(
        bounds(&periods(&mut db.conn(), los_angeles, "month")),
        vec![
            period("2027-02-01T08:00:00", "2027-03-01T08:00:00", "closed"),
            // Daylight saving time starts on March 14: April begins at 07:00Z.
            period("2027-03-01T08:00:00", "2027-04-01T07:00:00", "open"),
        ],
        "{los_angeles}"
    );
    assert_eq!(periods(&mut db.conn(), tokyo, "month")[0].status, "open");
}

/// Tokyo's month closes on the 15th at its midnight, with the limits of the subject's plan.
fn assert_tokyo_month_closes_on_its_anchor(db: &TestDb, tokyo: Subject) {
    let month = JobKind::ResetMonthly;
    assert_eq!(
        closed_of_kind(&reset(db, month, "2027-03-14T14:59:00Z"), tokyo),
        0
    );
    assert_eq!(
        closed_of_kind(&reset(db, month, "2027-03-14T15:00:00Z"), tokyo),
        1
    );
    let months = periods(&mut db.conn(), tokyo, "month");
    assert_eq!(
        bounds(&months),
        vec![
            period("2027-02-14T15:00:00", "2027-03-14T15:00:00", "closed"),
            period("2027-03-14T15:00:00", "2027-04-14T15:00:00", "open"),
        ],
        "{tokyo}"
    );
    assert_eq!(closed_totals(&months), vec![(2, 110)]);
    assert_eq!(months[0].close_reason.as_deref(), Some("rollover"));
    // The limits snapshot comes from the subject's plan.
    let (user_id, org_id) = tokyo.key();
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) AS n FROM usage_periods
              WHERE user_id = {user_id} AND org_id = {org_id} AND status = 'closed'
                AND plan_id = 1
                AND limits @> '[{{\"metric\": \"tokens\", \"max_value\": 100000}}]'"
        )),
        1,
        "{tokyo}"
    );
}

#[test]
fn two_subjects_days_close_at_their_own_midnight_across_a_dst_change() {
    for kind in [Subject::User, Subject::Org] {
        let db = TestDb::new();
        let [tokyo, los_angeles] = two_subjects(&db, kind);
        // 2027-03-14 in Los Angeles has 23 hours: 08:00Z to 07:00Z the next day; in Tokyo it
        // runs from 03-13 15:00Z to 03-14 15:00Z.
        let spends = [
            (los_angeles, 2, 30, "2027-03-14T09:00:00Z"),
            (los_angeles, 1, 40, "2027-03-15T06:59:59Z"),
            (los_angeles, 2, 50, "2027-03-15T07:00:00Z"),
            (tokyo, 0, 60, "2027-03-14T14:59:59Z"),
            (tokyo, 1, 70, "2027-03-14T15:00:00Z"),
        ];
        books(&db, "day", &spends, &[(2, 3, "2027-03-14T12:00:00Z")]);

        let day = JobKind::ResetDaily;
        let closed = |now| closed_of_kind(&reset(&db, day, now), tokyo);
        let days = |subject| periods(&mut db.conn(), subject, "day");
        assert_eq!(closed("2027-03-14T14:59:00Z"), 0);
        assert_eq!(closed("2027-03-14T15:00:00Z"), 1);
        assert_eq!(closed_totals(&days(tokyo)), vec![(1, 60)]);
        assert_eq!(days(los_angeles)[0].status, "open");
        assert_eq!(closed("2027-03-15T06:59:00Z"), 0);
        assert_eq!(closed("2027-03-15T07:00:00Z"), 1);
        assert_eq!(
            bounds(&days(los_angeles)),
            vec![
                period("2027-03-14T08:00:00", "2027-03-15T07:00:00", "closed"),
                period("2027-03-15T07:00:00", "2027-03-16T07:00:00", "open"),
            ],
            "{los_angeles}"
        );
        assert_eq!(closed_totals(&days(los_angeles)), vec![(2, 70)]);

        reset(&db, day, "2027-03-16T12:00:00Z");
        assert_eq!(closed_totals(&days(los_angeles)), vec![(2, 70), (1, 50)]);
        assert_eq!(closed_totals(&days(tokyo)), vec![(1, 60), (1, 70)]);
        for subject in [tokyo, los_angeles] {
            assert_tiled_and_exact(&db, subject, "day");
        }
        if let Subject::Org(_) = tokyo {
            // User 2's organization events fall on two of their own days; their personal
            // days hold their one personal event.
            let personal = closed_totals(&days(Subject::User(2)));
            let sum = personal
                .iter()
                .fold((0, 0), |(r, t), (pr, pt)| (r + pr, t + pt));
            assert_eq!(sum, (1, 3), "{personal:?}");
            for user in [0, 1, 2] {
                assert_tiled_and_exact(&db, Subject::User(user), "day");
            }
        }
    }
}

#[test]
fn after_three_days_of_downtime_each_missed_day_is_closed_with_exact_totals() {
    let db = TestDb::new();
    db.add_user(1, "Europe/Berlin");
    db.add_user(2, "Europe/Berlin"); // inactive throughout
    let personal = |kind, tokens, created_at| event(&db, 1, None, kind, tokens, created_at);
    personal("ai_response", 100, "2027-03-01T08:00:00Z");
    add_new_events_to_periods(&mut db.conn());
    // Down from here: nothing aggregated, nothing reset.
    personal("ai_response", 1, "2027-03-01T22:30:00Z"); // 23:30 in Berlin, still day 1
    personal("message_sent", 0, "2027-03-01T23:30:00Z"); // day 2 in Berlin
    personal("ai_response", 10, "2027-03-02T12:00:00Z");
    personal("ai_response", 1000, "2027-03-03T12:00:00Z");

    // Back at 00:10 Berlin on day 4: the catch-up runs aggregate, then reset-daily.
    add_new_events_to_periods(&mut db.conn());
    let report = reset(&db, JobKind::ResetDaily, "2027-03-03T23:10:00Z");
    assert_eq!(report.details["closed"], 3, "{report:?}");

    let days = assert_tiled_and_exact(&db, Subject::User(1), "day");
    let shape: Vec<_> = days
        .iter()
        .map(|p| (p.period_start, p.status.as_str(), p.requests, p.tokens))
        .collect();
    assert_eq!(
        shape,
        vec![
            (at("2027-02-28T23:00:00Z"), "closed", 2, 101),
            (at("2027-03-01T23:00:00Z"), "closed", 2, 10),
            (at("2027-03-02T23:00:00Z"), "closed", 1, 1000),
            (at("2027-03-03T23:00:00Z"), "open", 0, 0),
        ]
    );
    assert_eq!(
        db.count("SELECT count(*) AS n FROM usage_periods WHERE user_id = 2"),
        0
    );

    let again = reset(&db, JobKind::ResetDaily, "2027-03-03T23:10:00Z");
    assert_eq!(again.details["closed"], 0);
    assert_eq!(periods(&mut db.conn(), Subject::User(1), "day"), days);
}

#[test]
fn reconciliation_repairs_a_tampered_period_total_and_reports_it_naming_the_subject() {
    // User 5 counts in UTC; organization 1 in Tokyo, whose day is 01-09 15:00Z to 01-10 15:00Z.
    for (subject, zone) in [(Subject::User(5), "UTC"), (Subject::Org(1), "Asia/Tokyo")] {
        let db = TestDb::new();
        db.add_user(9, "UTC");
        db.add_subject(subject, zone, None, None);
        let (user_id, org_id) = subject.key();
        spend(&db, subject, 9, "ai_response", 300, "2027-01-10T03:00:00Z");
        spend(&db, subject, 9, "file_upload", 0, "2027-01-10T04:00:00Z");
        add_new_events_to_periods(&mut db.conn());
        open_period(&db, subject, "day", "2027-01-10T03:00:00Z");
        let key = format!("user_id = {user_id} AND org_id = {org_id} AND period = 'day'");
        db.execute(&format!(
            "UPDATE usage_periods SET tokens = tokens + 999 WHERE {key};
             UPDATE usage_period_kind_totals SET requests = 7 WHERE {key} AND kind = 'file_upload'"
        ));

        let report = reset(&db, JobKind::ResetDaily, "2027-01-11T00:00:00Z");

        let day = &periods(&mut db.conn(), subject, "day")[0];
        assert_eq!(
            (day.status.as_str(), day.tokens, day.requests),
            ("closed", 300, 2),
            "{subject}"
        );
        assert_eq!(
            db.count(&format!(
                "SELECT requests AS n FROM usage_period_kind_totals
                  WHERE {key} AND kind = 'file_upload'"
            )),
            1
        );
        assert_eq!(report.details["drift"]["periods"], 1);
        assert_eq!(report.details["drift"]["values"], 2);
        let samples = report.details["drift"]["samples"].as_array().unwrap();
        assert!(
            samples.iter().any(|s| s["subject"] == subject.to_string()
                && s["user_id"] == user_id
                && s["org_id"] == org_id
                && s["metric"] == "tokens"
                && s["kind"] == ""
                && s["delta"] == "-999"),
            "{samples:?}"
        );
        assert!(
            report.summary.contains("repaired drift"),
            "{}",
            report.summary
        );
        // Untouched monthly periods are not reported.
        let monthly = reset(&db, JobKind::ResetMonthly, "2027-02-01T00:00:00Z");
        assert_eq!(monthly.details["drift"]["values"], 0);
    }
}

#[test]
fn a_subject_with_an_unknown_time_zone_is_reset_in_utc_and_reported_while_the_others_go_on() {
    for kind in [Subject::User, Subject::Org] {
        let db = TestDb::new();
        db.add_user(9, "UTC");
        let (berlin, mars) = (kind(1), kind(3));
        db.add_subject(berlin, "Europe/Berlin", None, None);
        db.add_subject(mars, "Mars/Olympus_Mons", None, None);
        for subject in [berlin, mars] {
            spend(&db, subject, 9, "ai_response", 1, "2027-01-10T08:00:00Z");
        }
        add_new_events_to_periods(&mut db.conn());
        for subject in [berlin, mars] {
            open_period(&db, subject, "day", "2027-01-10T08:00:00Z");
        }

        let report = reset(&db, JobKind::ResetDaily, "2027-01-11T00:00:00Z");

        assert_eq!(closed_of_kind(&report, mars), 2, "{report:?}");
        let (unknown, known) = match mars {
            Subject::User(_) => ("unknown_timezone_users", "unknown_timezone_orgs"),
            Subject::Org(_) => ("unknown_timezone_orgs", "unknown_timezone_users"),
        };
        assert_eq!(report.details[unknown], serde_json::json!([3]));
        assert_eq!(report.details[known], serde_json::json!([]));
        // The unknown zone counts as UTC; Berlin's day ended at its own midnight.
        let day = |subject| periods(&mut db.conn(), subject, "day")[0].clone();
        assert_eq!(
            (day(mars).period_end, day(mars).status.as_str()),
            (at("2027-01-11T00:00:00Z"), "closed")
        );
        assert_eq!(day(berlin).period_end, at("2027-01-10T23:00:00Z"));
        assert_eq!(closed_totals(&[day(berlin)]), vec![(1, 1)]);
    }
}

#[test]
fn a_dry_run_reports_the_periods_it_would_close_and_changes_nothing() {
    let db = TestDb::new();
    db.add_user(1, "UTC");
    event(&db, 1, None, "ai_response", 1, "2027-01-10T08:00:00Z");
    add_new_events_to_periods(&mut db.conn());
    let report = db
        .dry_run_job(JobKind::ResetDaily, "2027-01-12T00:00:00Z")
        .unwrap();
    assert_eq!(report.details["closed"], 2); // day 10, and its empty successor day 11
    assert_eq!(
        db.count("SELECT count(*) AS n FROM usage_periods WHERE status = 'closed'"),
        0
    );
    assert_eq!(db.count("SELECT count(*) AS n FROM usage_periods"), 2);
}

/// Rows the statements since the last call read from the tables named `pattern` (a LIKE
/// pattern, partitions included): sequential reads plus index fetches. The counters are
/// flushed first, on `conn`, the connection that ran the statements.
fn rows_read(conn: &mut diesel::PgConnection, pattern: &str) -> i64 {
    use diesel::connection::SimpleConnection;
    conn.batch_execute("SELECT pg_stat_force_next_flush()")
        .unwrap();
    crate::support::count(
        conn,
        &format!(
            "SELECT COALESCE(sum(COALESCE(seq_tup_read, 0) + COALESCE(idx_tup_fetch, 0)), 0)::bigint AS n
               FROM pg_stat_user_tables WHERE relname LIKE '{pattern}'"
        ),
    )
    .unwrap()
}

#[test]
fn a_rollover_batch_reads_the_rows_of_its_own_periods_not_whole_tables() {
    // 2,000 users in UTC (the highest ids) with one event each, whose days end at midnight,
    // among 10,000 users in Los Angeles with two events each, whose days end eight hours later. The batch of
    // 2,000 days reads their 2,000 events and totals through the indexes. A plan that hashes
    // the batch reads all 22,000 events (and the 24,000 periods and per-kind totals), once
    // per batch. With drift (one day tampered) the totals are rewritten, by key too.
    for tamper in [false, true] {
        let db = TestDb::new();
        db.execute(
            "INSERT INTO users (id, email, timezone)
             SELECT g, 'user' || g || '@example.com',
                    CASE WHEN g > 10000 THEN 'UTC' ELSE 'America/Los_Angeles' END
               FROM generate_series(1, 12000) AS g;
             INSERT INTO usage_events (user_id, kind, tokens, created_at)
             SELECT g, 'ai_response', 10, '2027-01-10T12:00:00Z'
               FROM generate_series(1, 12000) AS g, generate_series(1, 2) AS n
              WHERE g <= 10000 OR n = 1",
        );
        let mut conn = db.conn();
        add_new_events_to_periods(&mut conn);
        if tamper {
            db.execute(
                "UPDATE usage_periods SET tokens = 7 WHERE user_id = 11000 AND period = 'day'",
            );
        }
        db.execute("VACUUM ANALYZE");
        let tables = ["usage_events%", "usage_periods", "usage_period_kind_totals"];
        let before: Vec<i64> = tables.iter().map(|t| rows_read(&mut conn, t)).collect();

        let report = JobKind::ResetDaily
            .run(
                &db.ctx(),
                &mut conn,
                at("2027-01-11T00:00:00Z"),
                &RunOpts::default(),
            )
            .unwrap();

        assert_eq!(report.details["closed"], 2000, "{}", report.details);
        assert_eq!(report.details["drift"]["periods"], i64::from(tamper));
        let read: Vec<i64> = tables
            .iter()
            .zip(&before)
            .map(|(t, b)| rows_read(&mut conn, t) - b)
            .collect();
        // At most three reads of each table per period of the batch.
        assert!(
            read.iter().all(|&n| n <= 6_000),
            "rows read from {tables:?}: {read:?} (tamper: {tamper})"
        );
    }
}
