//! Organizations' books: usage spent in an organization is summarised on the organization's
//! local days and counted in its periods (its zone, its billing anchor), apart from its
//! members' personal usage; every invariant of the books holds per organization and per
//! member. Every test runs alone on its cluster ([`TestDb::alone`]): an open transaction
//! anywhere holds the aggregation watermark back.

use chrono::NaiveDate;
use proptest::prelude::*;
use usage_worker::jobs::{JobKind, JobReport, RunOpts};

use crate::support::books::{assert_all_aggregated_exactly, summary_differences};
use crate::support::org_books::{add_organization_with_members, assert_subject_books_exact};
use crate::support::writers::{
    Spender, WriterStream, transactions, write_while_aggregating, writer_stream,
};
use crate::support::{TestDb, text};

const NOW: &str = "2026-11-23T10:00:00Z";

fn aggregate(db: &TestDb) -> JobReport {
    db.run_job(JobKind::Aggregate, NOW, &RunOpts::default())
        .unwrap()
}

fn rebuild(db: &TestDb, from: &str, to: &str) -> JobReport {
    let day = |text: &str| text.parse::<NaiveDate>().ok();
    let opts = RunOpts {
        from: day(from),
        to: day(to),
        ..RunOpts::default()
    };
    db.run_job(JobKind::Aggregate, NOW, &opts).unwrap()
}

/// Tokens of `user_id`'s summary rows on `day`, in organization `org_id` (None = personal).
fn summary_tokens(db: &TestDb, user_id: i64, org_id: Option<i64>, day: &str) -> i64 {
    let org = org_id.map_or("IS NULL".to_string(), |o| format!("= {o}"));
    db.count(&format!(
        "SELECT COALESCE(sum(tokens), 0)::bigint AS n FROM token_usage_daily
          WHERE user_id = {user_id} AND org_id {org} AND day = '{day}'"
    ))
}

/// The whole summary as text, in key order.
fn summary_rows(db: &TestDb) -> String {
    text(
        &mut db.conn(),
        "SELECT string_agg(format('%s|%s|%s|%s|%s|%s|%s|%s|%s', user_id, org_id, day, kind,
                                  request_type, model, events, tokens, cost), E'\\n'
                           ORDER BY user_id, org_id NULLS FIRST, day, kind, request_type, model) AS t
           FROM token_usage_daily",
    )
}

/// Users in several zones (user 0 among them: a legal application user id).
const USERS: &[(i64, &str)] = &[
    (0, "Asia/Tokyo"),
    (1, "Europe/Berlin"),
    (2, "America/New_York"),
    (3, "Australia/Lord_Howe"),
    (4, "UTC"),
];

/// Organizations with their zone, billing anchor and members; organization 5's zone is
/// unknown (counted in UTC). Organization 4 has events but no organizations row.
const ORGS: &[(i64, &str, Option<i32>, &[i64])] = &[
    (1, "Asia/Kolkata", Some(15), &[0, 1]),
    (2, "America/Los_Angeles", None, &[1, 2]),
    (3, "Pacific/Kiritimati", Some(31), &[2, 3]),
    (5, "Mars/Olympus", Some(20), &[0, 4]),
];

/// Who spends the generated events: members in each of their organizations, personal usage,
/// an organization without a row and a user without one.
const SPENDERS: &[Spender] = &[
    (0, None),
    (0, Some(1)),
    (0, Some(5)),
    (1, None),
    (1, Some(1)),
    (1, Some(2)),
    (2, Some(2)),
    (2, Some(3)),
    (3, None),
    (3, Some(3)),
    (4, Some(5)),
    (4, Some(4)),
    (9, None),
];

fn organizations_books_hold_under_concurrent_writers(streams: Vec<WriterStream>) {
    let db = TestDb::alone();
    for (id, zone) in USERS {
        db.add_user(*id, zone);
    }
    for (id, zone, anchor, members) in ORGS {
        add_organization_with_members(&db, *id, zone, *anchor, members);
    }
    let ctx = db.ctx_with(|s| s.aggregate.batch_events = 7);
    let writers = streams
        .into_iter()
        .map(|stream| transactions(stream, |i| SPENDERS[i]))
        .collect();
    write_while_aggregating(&db, &ctx, NOW, writers);

    assert_all_aggregated_exactly(&db);
    assert_subject_books_exact(&db);
    // Personal periods count no event of an organization, and the reverse.
    assert_eq!(
        db.count(
            "SELECT COALESCE(sum(requests), 0)::bigint AS n FROM usage_periods
              WHERE org_id = 0 AND period = 'day'"
        ),
        db.count("SELECT count(*) AS n FROM usage_events WHERE org_id IS NULL")
    );
    assert_eq!(
        db.count(
            "SELECT COALESCE(sum(requests), 0)::bigint AS n FROM usage_periods
              WHERE org_id > 0 AND user_id = 0 AND period = 'month'"
        ),
        db.count("SELECT count(*) AS n FROM usage_events WHERE org_id IS NOT NULL")
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, ..ProptestConfig::default() })]

    #[test]
    fn organizations_and_members_books_equal_the_raw_events_with_concurrent_writers(
        // 30 days from 2026-10-20: clock changes, anchors 31 and 20, a new calendar month.
        streams in prop::collection::vec(writer_stream(SPENDERS.len(), 30), 3..5)
    ) {
        organizations_books_hold_under_concurrent_writers(streams);
    }
}

#[test]
fn a_late_event_in_an_organization_lands_on_the_organizations_local_day() {
    let db = TestDb::alone();
    db.add_user(7, "America/Los_Angeles");
    add_organization_with_members(&db, 1, "Pacific/Kiritimati", Some(31), &[7]);
    db.execute(
        "INSERT INTO usage_events (user_id, org_id, kind, tokens, created_at)
         VALUES (7, 1, 'ai_response', 50, '2026-11-23T09:00:00Z')",
    );
    aggregate(&db);

    // 40 days before now, 12:00 UTC: already 02:00 on the 15th in Kiritimati (UTC+14), still
    // the morning of the 14th in Los Angeles.
    db.execute(
        "INSERT INTO usage_events (user_id, org_id, kind, tokens, created_at)
         VALUES (7, 1, 'ai_response', 1234, '2026-10-14T12:00:00Z'),
                (7, NULL, 'ai_response', 5, '2026-10-14T12:00:00Z')",
    );
    let report = aggregate(&db);
    assert_eq!(report.details["events"], 2);
    assert_eq!(summary_tokens(&db, 7, Some(1), "2026-10-15"), 1234);
    assert_eq!(summary_tokens(&db, 7, Some(1), "2026-10-14"), 0);
    assert_eq!(summary_tokens(&db, 7, None, "2026-10-14"), 5);
    assert_eq!(summary_tokens(&db, 7, Some(1), "2026-11-23"), 50);
    // The organization's day: from Kiritimati's midnight of the 15th.
    assert_eq!(
        db.count(
            "SELECT tokens AS n FROM usage_periods
              WHERE user_id = 0 AND org_id = 1 AND period = 'day'
                AND period_start = '2026-10-14T10:00:00Z'"
        ),
        1234
    );
    assert_all_aggregated_exactly(&db);
    assert_subject_books_exact(&db);
}

#[test]
fn a_personal_event_of_user_zero_and_an_organizations_event_never_mix() {
    let db = TestDb::alone();
    db.add_user(0, "Asia/Tokyo");
    db.add_user(5, "Europe/Berlin");
    add_organization_with_members(&db, 3, "America/New_York", None, &[0, 5]);
    // 20:00 UTC on the 22nd: the 23rd in Tokyo, the 22nd in New York.
    db.execute(
        "INSERT INTO usage_events (user_id, org_id, kind, tokens, created_at)
         VALUES (0, NULL, 'ai_response', 100, '2026-11-22T20:00:00Z'),
                (0, 3, 'ai_response', 20, '2026-11-22T20:00:00Z'),
                (5, 3, 'ai_response', 3, '2026-11-22T21:00:00Z')",
    );
    aggregate(&db);
    // A second batch into the periods the first one opened.
    db.execute(
        "INSERT INTO usage_events (user_id, org_id, kind, tokens, created_at)
         VALUES (0, NULL, 'message_sent', 1, '2026-11-22T22:00:00Z'),
                (0, 3, 'message_sent', 1000, '2026-11-22T22:00:00Z')",
    );
    aggregate(&db);

    let period_tokens = |org_id: i64, start: &str| {
        db.count(&format!(
            "SELECT tokens AS n FROM usage_periods
              WHERE user_id = 0 AND org_id = {org_id} AND period = 'day'
                AND period_start = '{start}'"
        ))
    };
    // User 0's day from Tokyo's midnight; the organization's from New York's.
    assert_eq!(period_tokens(0, "2026-11-22T15:00:00Z"), 101);
    assert_eq!(period_tokens(3, "2026-11-22T05:00:00Z"), 1023);
    assert_eq!(
        db.count("SELECT count(*) AS n FROM usage_periods WHERE period = 'day'"),
        2
    );
    let used = |function: &str| {
        db.count(&format!(
            "SELECT used::bigint AS n FROM {function}
              WHERE metric = 'tokens' AND period = 'day' AND kind = ''"
        ))
    };
    assert_eq!(used("quota_status(0, '2026-11-22T23:00:00Z')"), 101);
    assert_eq!(used("org_quota_status(3, '2026-11-22T23:00:00Z')"), 1023);

    assert_eq!(summary_tokens(&db, 0, None, "2026-11-23"), 101);
    assert_eq!(summary_tokens(&db, 0, Some(3), "2026-11-22"), 1020);
    assert_eq!(summary_tokens(&db, 5, Some(3), "2026-11-22"), 3);
    assert_eq!(
        db.count(
            "SELECT sum(tokens)::bigint AS n
               FROM usage_summary(0, 'month', '2026-11-01', '2026-11-30')"
        ),
        101
    );
    assert_eq!(
        db.count(
            "SELECT sum(tokens)::bigint AS n
               FROM org_usage_summary(3, 'month', '2026-11-01', '2026-11-30')"
        ),
        1023
    );
    assert_all_aggregated_exactly(&db);
    assert_subject_books_exact(&db);
}

#[test]
fn rebuild_of_an_organizations_days_reproduces_the_same_rows() {
    let db = TestDb::alone();
    db.add_user(1, "America/Los_Angeles");
    db.add_user(2, "Asia/Tokyo");
    add_organization_with_members(&db, 4, "Asia/Kolkata", None, &[1, 2]);
    // Every 37 minutes for four days, two events in three in the organization.
    db.execute(
        "INSERT INTO usage_events (user_id, org_id, kind, model, tokens, cost, created_at)
         SELECT 1 + g % 2, CASE WHEN g % 3 > 0 THEN 4 END, 'ai_response', 'gpt-4o', g, g * 0.001,
                '2026-10-09T00:00:00Z'::timestamptz + g * interval '37 minutes'
           FROM generate_series(0, 4 * 24 * 60 / 37) g",
    );
    aggregate(&db);
    let aggregated = summary_rows(&db);
    assert_eq!(summary_differences(&db), 0);

    db.execute(
        "DELETE FROM token_usage_daily WHERE org_id = 4 AND day = '2026-10-10';
         UPDATE token_usage_daily SET tokens = tokens + 1
          WHERE org_id = 4 AND user_id = 2 AND day = '2026-10-11';
         INSERT INTO token_usage_daily (user_id, org_id, day, kind, request_type, model, events, tokens)
         VALUES (1, 4, '2026-10-11', 'file_upload', '', '', 1, 99)",
    );
    let report = rebuild(&db, "2026-10-08", "2026-10-13");
    // Two members' rows deleted, one changed, one invented.
    assert_eq!(report.details["rows_differing"], 4, "{}", report.details);
    assert!(
        report.details["differences"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["org_id"] == 4),
        "{}",
        report.details
    );
    assert_eq!(summary_rows(&db), aggregated);
    assert_eq!(
        rebuild(&db, "2026-10-08", "2026-10-13").details["rows_differing"],
        0
    );
    assert_all_aggregated_exactly(&db);
}

#[test]
fn an_organization_with_an_unknown_zone_or_without_a_row_is_counted_in_utc_and_reported() {
    let db = TestDb::alone();
    db.add_user(1, "Asia/Tokyo");
    add_organization_with_members(&db, 2, "Mars/Olympus", None, &[1]);
    // 20:00 UTC on the 22nd: the 23rd in Tokyo, still the 22nd in UTC.
    db.execute(
        "INSERT INTO usage_events (user_id, org_id, kind, tokens, created_at)
         VALUES (1, 2, 'ai_response', 10, '2026-11-22T20:00:00Z'),
                (1, 8, 'ai_response', 20, '2026-11-22T20:00:00Z'),
                (1, NULL, 'ai_response', 30, '2026-11-22T20:00:00Z')",
    );
    let report = aggregate(&db);
    assert_eq!(report.details["unknown_timezone_orgs"], 1);
    assert_eq!(
        report.details["unknown_timezone_org_ids"],
        serde_json::json!([2])
    );
    assert_eq!(report.details["orgs_without_row"], 1);
    assert_eq!(
        report.details["org_ids_without_row"],
        serde_json::json!([8])
    );
    assert_eq!(report.details["unknown_timezone_users"], 0);
    assert!(
        report
            .summary
            .contains("1 organization(s) with an unknown time zone"),
        "{}",
        report.summary
    );
    assert_eq!(summary_tokens(&db, 1, Some(2), "2026-11-22"), 10);
    assert_eq!(summary_tokens(&db, 1, Some(8), "2026-11-22"), 20);
    assert_eq!(summary_tokens(&db, 1, None, "2026-11-23"), 30);
    assert_all_aggregated_exactly(&db);
    assert_subject_books_exact(&db);
}
