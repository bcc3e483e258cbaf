//! Organizations' quota periods under reset-daily / reset-monthly: each organization rolls
//! over at its own local midnight and billing anchor, its closed totals equal the raw events
//! spent in it, its members' personal periods count only their personal usage, and a manual
//! `--org` reset splits its period.
//!
//! Organizations' periods that a test needs are opened with SQL after aggregation
//! (`open_org_period`, which leaves a period `aggregate` has already opened as it is): the
//! tests hold whether or not `aggregate` counts events in organizations' periods itself, so
//! every assertion on totals is made on closed, reconciled periods.

use usage_worker::jobs::{JobKind, JobReport, RunOpts};

use crate::support::org_periods::{event_in, open_org_period, org_periods, org_raw_sums};
use crate::support::quota::{PeriodRow, add_new_events_to_periods, periods, raw_sums};
use crate::support::{self, TestDb, at};

/// Plan 1 limits tokens. Organization 1 is in Tokyo and bills from the 15th; organization 2
/// is in Los Angeles on calendar months. User 0 — a legal application user id — owns
/// organization 1, user 2 owns organization 2, user 1 is in both.
fn two_orgs(db: &TestDb) {
    db.execute(
        "INSERT INTO plans (id, name) VALUES (1, 'team');
         INSERT INTO plan_limits (plan_id, metric, period, kind, max_value)
         VALUES (1, 'tokens', 'month', '', 100000), (1, 'tokens', 'day', '', 5000)",
    );
    db.add_user(0, "UTC");
    db.add_user(1, "Europe/Berlin");
    db.add_user(2, "America/New_York");
    db.add_organization(1, "org 1", "Asia/Tokyo", Some(15), Some(1));
    db.add_organization(2, "org 2", "America/Los_Angeles", None, Some(1));
    db.add_member(1, 0, "owner");
    db.add_member(1, 1, "member");
    db.add_member(2, 2, "owner");
    db.add_member(2, 1, "admin");
}

fn reset(db: &TestDb, kind: JobKind, now: &str) -> JobReport {
    db.run_job(kind, now, &RunOpts::default()).unwrap()
}

/// Organizations' periods closed by a rollover run.
fn org_closed(report: &JobReport) -> &serde_json::Value {
    &report.details["closed_org_periods"]
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

fn closed_totals(rows: &[PeriodRow]) -> Vec<(i64, i64)> {
    rows.iter()
        .filter(|p| p.status == "closed")
        .map(|p| (p.requests, p.tokens))
        .collect()
}

/// The organization's periods follow each other without gap or overlap and each closed one
/// holds exactly the raw events spent in the organization in its range.
fn assert_org_books_exact(db: &TestDb, org: i64, period: &str) {
    let mut conn = db.conn();
    let rows = org_periods(&mut conn, org, period);
    for pair in rows.windows(2) {
        assert_eq!(
            pair[0].period_end, pair[1].period_start,
            "gap or overlap: {pair:?}"
        );
    }
    for row in rows.iter().filter(|p| p.status == "closed") {
        let raw = org_raw_sums(&mut conn, org, row.period_start, row.period_end);
        assert_eq!((row.requests, row.tokens), raw, "org {org}: {row:?}");
    }
}

/// Every closed personal period of the user holds exactly their personal events.
fn assert_personal_books_exact(db: &TestDb, user: i64, period: &str) {
    let mut conn = db.conn();
    for row in periods(&mut conn, user, period)
        .iter()
        .filter(|p| p.status == "closed")
    {
        let raw = raw_sums(&mut conn, user, row.period_start, row.period_end);
        assert_eq!((row.requests, row.tokens), raw, "user {user}: {row:?}");
    }
}

#[test]
fn two_organizations_roll_over_monthly_at_their_own_zone_and_billing_anchor() {
    let db = TestDb::new();
    two_orgs(&db);
    // Organization 1 (Tokyo, anchor 15): the month ends 2027-03-15 00:00 JST = 03-14 15:00Z.
    event_in(&db, 0, Some(1), 100, "2027-02-20T00:00:00Z");
    event_in(&db, 1, Some(1), 10, "2027-03-14T14:59:59Z");
    event_in(&db, 1, Some(1), 1000, "2027-03-14T15:00:00Z");
    // Organization 2 (Los Angeles): February ends 2027-03-01 00:00 PST = 08:00Z.
    event_in(&db, 2, Some(2), 200, "2027-02-10T00:00:00Z");
    event_in(&db, 1, Some(2), 20, "2027-03-01T07:59:59Z");
    event_in(&db, 2, Some(2), 2000, "2027-03-01T08:00:00Z");
    // Personal usage of members.
    event_in(&db, 0, None, 5, "2027-02-20T01:00:00Z");
    event_in(&db, 1, None, 7, "2027-03-01T12:00:00Z");
    add_new_events_to_periods(&mut db.conn());
    for (org, instant) in [
        (1, "2027-02-20T00:00:00Z"),
        (1, "2027-03-14T15:00:00Z"),
        (2, "2027-02-10T00:00:00Z"),
        (2, "2027-03-01T08:00:00Z"),
    ] {
        open_org_period(&db, org, "month", instant);
    }

    let month = JobKind::ResetMonthly;
    assert_eq!(org_closed(&reset(&db, month, "2027-03-01T07:59:00Z")), 0);
    let report = reset(&db, month, "2027-03-01T08:00:00Z");
    assert_eq!(org_closed(&report), 1, "{report:?}");
    assert_eq!(
        bounds(&org_periods(&mut db.conn(), 2, "month")),
        vec![
            (
                "2027-02-01T08:00:00+00:00".into(),
                "2027-03-01T08:00:00+00:00".into(),
                "closed"
            ),
            // Daylight saving time starts on March 14: April begins at 07:00Z.
            (
                "2027-03-01T08:00:00+00:00".into(),
                "2027-04-01T07:00:00+00:00".into(),
                "open"
            ),
        ]
    );
    assert_eq!(org_periods(&mut db.conn(), 1, "month")[0].status, "open");

    assert_eq!(org_closed(&reset(&db, month, "2027-03-14T14:59:00Z")), 0);
    assert_eq!(org_closed(&reset(&db, month, "2027-03-14T15:00:00Z")), 1);
    let tokyo = org_periods(&mut db.conn(), 1, "month");
    assert_eq!(
        bounds(&tokyo),
        vec![
            (
                "2027-02-14T15:00:00+00:00".into(),
                "2027-03-14T15:00:00+00:00".into(),
                "closed"
            ),
            (
                "2027-03-14T15:00:00+00:00".into(),
                "2027-04-14T15:00:00+00:00".into(),
                "open"
            ),
        ]
    );
    assert_eq!(closed_totals(&tokyo), vec![(2, 110)]);
    assert_eq!(tokyo[0].close_reason.as_deref(), Some("rollover"));
    // The limits snapshot comes from the organization's plan.
    assert_eq!(
        db.count(
            "SELECT count(*) AS n FROM usage_periods
              WHERE user_id = 0 AND org_id = 1 AND status = 'closed' AND plan_id = 1
                AND limits @> '[{\"metric\": \"tokens\", \"max_value\": 100000}]'"
        ),
        1
    );

    let report = reset(&db, month, "2027-04-15T00:00:00Z");
    assert_eq!(org_closed(&report), 2, "{report:?}");
    assert_eq!(
        closed_totals(&org_periods(&mut db.conn(), 2, "month")),
        vec![(2, 220), (1, 2000)]
    );
    assert_eq!(
        closed_totals(&org_periods(&mut db.conn(), 1, "month")),
        vec![(2, 110), (1, 1000)]
    );
    for org in [1, 2] {
        assert_org_books_exact(&db, org, "month");
    }
    // Members' personal months count their personal events only: user 0's own rows are not
    // organization 1's (February, then the March its activity opened).
    assert_eq!(
        closed_totals(&periods(&mut db.conn(), 0, "month")),
        vec![(1, 5), (0, 0)]
    );
    assert_eq!(
        closed_totals(&periods(&mut db.conn(), 1, "month")),
        vec![(1, 7)]
    );
    for user in [0, 1, 2] {
        assert_personal_books_exact(&db, user, "month");
    }
}

#[test]
fn two_organizations_roll_over_daily_at_their_own_midnight_across_a_dst_change() {
    let db = TestDb::new();
    two_orgs(&db);
    // 2027-03-14 in Los Angeles has 23 hours: 08:00Z to 07:00Z the next day.
    event_in(&db, 2, Some(2), 30, "2027-03-14T09:00:00Z");
    event_in(&db, 1, Some(2), 40, "2027-03-15T06:59:59Z");
    event_in(&db, 2, Some(2), 50, "2027-03-15T07:00:00Z");
    // 2027-03-14 in Tokyo: 03-13 15:00Z to 03-14 15:00Z.
    event_in(&db, 0, Some(1), 60, "2027-03-14T14:59:59Z");
    event_in(&db, 1, Some(1), 70, "2027-03-14T15:00:00Z");
    event_in(&db, 2, None, 3, "2027-03-14T12:00:00Z");
    add_new_events_to_periods(&mut db.conn());
    for (org, instant) in [
        (2, "2027-03-14T09:00:00Z"),
        (2, "2027-03-15T07:00:00Z"),
        (1, "2027-03-14T14:59:59Z"),
        (1, "2027-03-14T15:00:00Z"),
    ] {
        open_org_period(&db, org, "day", instant);
    }

    let day = JobKind::ResetDaily;
    assert_eq!(org_closed(&reset(&db, day, "2027-03-14T14:59:00Z")), 0);
    assert_eq!(org_closed(&reset(&db, day, "2027-03-14T15:00:00Z")), 1);
    assert_eq!(
        closed_totals(&org_periods(&mut db.conn(), 1, "day")),
        vec![(1, 60)]
    );
    assert_eq!(org_periods(&mut db.conn(), 2, "day")[0].status, "open");
    assert_eq!(org_closed(&reset(&db, day, "2027-03-15T06:59:00Z")), 0);
    assert_eq!(org_closed(&reset(&db, day, "2027-03-15T07:00:00Z")), 1);
    let los_angeles = org_periods(&mut db.conn(), 2, "day");
    assert_eq!(
        bounds(&los_angeles),
        vec![
            (
                "2027-03-14T08:00:00+00:00".into(),
                "2027-03-15T07:00:00+00:00".into(),
                "closed"
            ),
            (
                "2027-03-15T07:00:00+00:00".into(),
                "2027-03-16T07:00:00+00:00".into(),
                "open"
            ),
        ]
    );
    assert_eq!(closed_totals(&los_angeles), vec![(2, 70)]);

    reset(&db, day, "2027-03-16T12:00:00Z");
    assert_eq!(
        closed_totals(&org_periods(&mut db.conn(), 2, "day")),
        vec![(2, 70), (1, 50)]
    );
    assert_eq!(
        closed_totals(&org_periods(&mut db.conn(), 1, "day")),
        vec![(1, 60), (1, 70)]
    );
    for org in [1, 2] {
        assert_org_books_exact(&db, org, "day");
    }
    // User 2's organization events fall on two of their own days; their personal days hold
    // their one personal event.
    let personal = closed_totals(&periods(&mut db.conn(), 2, "day"));
    let sum = personal
        .iter()
        .fold((0, 0), |(r, t), (pr, pt)| (r + pr, t + pt));
    assert_eq!(sum, (1, 3), "{personal:?}");
    for user in [0, 1, 2] {
        assert_personal_books_exact(&db, user, "day");
    }
}

#[test]
fn manual_org_reset_splits_the_org_period_and_a_later_event_lands_in_the_new_one() {
    let db = TestDb::new();
    two_orgs(&db);
    // 2027-01-10 in Los Angeles: 08:00Z to 2027-01-11 08:00Z.
    event_in(&db, 2, Some(2), 30, "2027-01-10T18:00:00Z");
    event_in(&db, 1, None, 4, "2027-01-10T18:30:00Z");
    event_in(&db, 2, None, 6, "2027-01-10T19:00:00Z");
    add_new_events_to_periods(&mut db.conn());
    open_org_period(&db, 2, "day", "2027-01-10T18:00:00Z");
    let manual = [
        "--run",
        "reset-daily",
        "--org",
        "2",
        "--at",
        "2027-01-10T20:00:00Z",
        "--allow-future",
    ];

    let preview = support::stdout_of_success(db.binary().args(manual).arg("--dry-run"));
    assert!(
        preview.contains("would close org 2's day period")
            && preview.contains(
                "org 2 day 2027-01-10 08:00:00Z to 2027-01-10 20:00:00Z: would close (manual)"
            ),
        "{preview}"
    );
    assert_eq!(
        bounds(&org_periods(&mut db.conn(), 2, "day")),
        vec![(
            "2027-01-10T08:00:00+00:00".into(),
            "2027-01-11T08:00:00+00:00".into(),
            "open"
        )]
    );

    let out = support::stdout_of_success(db.binary().args(manual));
    assert!(out.contains("closed org 2's day period"), "{out}");
    assert_eq!(
        db.count(
            "SELECT count(*) AS n FROM job_runs
              WHERE job = 'reset-daily' AND trigger = 'manual' AND status = 'succeeded'
                AND user_id IS NULL AND report->'details'->>'org_id' = '2'"
        ),
        1
    );
    // A reset of one organization does not stand in for the rollover of everyone.
    let long_ago = at("2020-01-01T00:00:00Z");
    assert!(
        !usage_worker::ledger::succeeded_since(&mut db.conn(), JobKind::ResetDaily, long_ago)
            .unwrap()
    );
    let split = org_periods(&mut db.conn(), 2, "day");
    assert_eq!(
        bounds(&split),
        vec![
            (
                "2027-01-10T08:00:00+00:00".into(),
                "2027-01-10T20:00:00+00:00".into(),
                "closed"
            ),
            (
                "2027-01-10T20:00:00+00:00".into(),
                "2027-01-11T08:00:00+00:00".into(),
                "open"
            ),
        ]
    );
    assert_eq!(split[0].close_reason.as_deref(), Some("manual"));
    assert_eq!(closed_totals(&split), vec![(1, 30)]);
    // The same reset again changes nothing.
    let again = RunOpts {
        org_id: Some(2),
        ..RunOpts::default()
    };
    let report = db
        .run_job(JobKind::ResetDaily, "2027-01-10T20:00:00Z", &again)
        .unwrap();
    assert_eq!(report.details["reset"], false, "{report:?}");
    assert_eq!(org_periods(&mut db.conn(), 2, "day"), split);

    event_in(&db, 1, Some(2), 50, "2027-01-10T22:00:00Z");
    add_new_events_to_periods(&mut db.conn());
    support::stdout_of_success(db.binary().args([
        "--run",
        "reset-daily",
        "--at",
        "2027-01-11T08:00:00Z",
        "--allow-future",
    ]));
    assert!(
        usage_worker::ledger::succeeded_since(&mut db.conn(), JobKind::ResetDaily, long_ago)
            .unwrap()
    );
    let days = org_periods(&mut db.conn(), 2, "day");
    assert_eq!(closed_totals(&days), vec![(1, 30), (1, 50)]);
    assert_eq!(days[1].close_reason.as_deref(), Some("rollover"));
    assert_org_books_exact(&db, 2, "day");
    // The members' personal days hold their personal events only.
    assert_eq!(
        closed_totals(&periods(&mut db.conn(), 1, "day")),
        vec![(1, 4)]
    );
    assert_eq!(
        closed_totals(&periods(&mut db.conn(), 2, "day")),
        vec![(1, 6)]
    );
}

#[test]
fn manual_reset_of_an_unknown_organization_fails_naming_it() {
    let db = TestDb::new();
    two_orgs(&db);
    let out = support::output_of(db.binary().args([
        "--run",
        "reset-monthly",
        "--org",
        "999",
        "--at",
        "2027-01-10T12:00:00Z",
        "--allow-future",
    ]));
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("organization 999 is not in the organizations table"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    assert_eq!(db.count("SELECT count(*) AS n FROM usage_periods"), 0);
}

#[test]
fn drift_and_unknown_zones_of_organizations_are_reported_by_organization() {
    let db = TestDb::new();
    two_orgs(&db);
    db.add_organization(3, "org 3", "Mars/Olympus_Mons", None, None);
    // 12:00 in Tokyo on 2027-01-10, whose day is 01-09 15:00Z to 01-10 15:00Z.
    event_in(&db, 1, Some(1), 10, "2027-01-10T03:00:00Z");
    event_in(&db, 1, Some(3), 1, "2027-01-10T03:00:00Z");
    add_new_events_to_periods(&mut db.conn());
    open_org_period(&db, 1, "day", "2027-01-10T03:00:00Z");
    open_org_period(&db, 3, "day", "2027-01-10T03:00:00Z");
    db.execute("UPDATE usage_periods SET tokens = 999 WHERE user_id = 0 AND org_id = 1");

    let report = reset(&db, JobKind::ResetDaily, "2027-01-11T00:00:00Z");
    assert_eq!(
        report.details["unknown_timezone_orgs"],
        serde_json::json!([3])
    );
    assert_eq!(
        report.details["unknown_timezone_users"],
        serde_json::json!([])
    );
    let samples = report.details["drift"]["samples"].as_array().unwrap();
    assert!(
        samples.iter().any(|s| s["subject"] == "org 1"
            && s["org_id"] == 1
            && s["user_id"] == 0
            && s["metric"] == "tokens"
            && s["kind"] == ""
            && s["delta"] == "-989"),
        "{samples:?}"
    );
    // The unknown zone counts as UTC.
    let mars = org_periods(&mut db.conn(), 3, "day");
    assert_eq!(
        (mars[0].period_end, mars[0].status.as_str()),
        (at("2027-01-11T00:00:00Z"), "closed")
    );
    assert_eq!(
        closed_totals(&org_periods(&mut db.conn(), 1, "day")),
        vec![(1, 10)]
    );
}
