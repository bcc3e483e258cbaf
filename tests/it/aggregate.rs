//! The aggregate job: new events are added into the daily summary and into their subject's
//! periods exactly once, on the subject's local day (a user's personal usage on the user's
//! days, an organization's on the organization's), whatever the delay, a crash or a concurrent
//! delete. Every test runs alone on its cluster ([`TestDb::alone`]): a transaction open
//! anywhere in the cluster holds the aggregation watermark back, and the assertions that
//! every event is aggregated would depend on the other tests.

use std::thread;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Integer, Text};
use usage_worker::jobs::{Ctx, JobError, JobKind, JobReport, RunOpts};
use usage_worker::subject::Subject;

use crate::support::books::{
    assert_all_aggregated_exactly, assert_subject_books_exact, summary_differences, summary_tokens,
};
use crate::support::{self, TestDb, at};

const NOW: &str = "2026-11-23T10:00:00Z";

fn aggregate(ctx: &Ctx, conn: &mut PgConnection) -> Result<JobReport, JobError> {
    JobKind::Aggregate.run(ctx, conn, at(NOW), &RunOpts::default())
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
    assert_eq!(summary_tokens(&db, 1, None, "2026-11-23"), 330);
    assert_eq!(summary_tokens(&db, 1, None, "2026-11-22"), 0);
    assert_eq!(
        db.count("SELECT count(*) AS n FROM token_usage_daily WHERE day = '2026-11-22'"),
        1
    );
    assert_eq!(summary_differences(&db), 0);

    let again = aggregate(&ctx, &mut db.conn()).unwrap();
    assert_eq!(again.details["events"], 0);
    assert_eq!(summary_tokens(&db, 1, None, "2026-11-23"), 330);
    assert_eq!(summary_differences(&db), 0);
}

/// One event of `tokens` spent by `user` at `created_at`, in organization `org` (None:
/// personally).
fn spent(db: &TestDb, user: i64, org: Option<i64>, tokens: i64, created_at: &str) {
    let org = org.map_or("NULL".to_string(), |o| o.to_string());
    db.execute(&format!(
        "INSERT INTO usage_events (user_id, org_id, kind, tokens, cost, created_at)
         VALUES ({user}, {org}, 'ai_response', {tokens}, 0.5, '{created_at}')"
    ));
}

#[test]
fn an_event_dated_forty_days_ago_and_inserted_today_lands_on_its_subjects_local_day() {
    // User 7 spends personally, in New York; or in organization 1, in Kiritimati (UTC+14)
    // with anchor 31, while living in Los Angeles. The late event is 40 days before now:
    // 02:00 UTC, still the evening of the 13th in New York; 12:00 UTC, already 02:00 on the
    // 15th in Kiritimati, still the morning of the 14th in Los Angeles.
    for (subject, late, day, day_start) in [
        (
            Subject::User(7),
            "2026-10-14T02:00:00Z",
            "2026-10-13",
            "2026-10-13T04:00:00Z",
        ),
        (
            Subject::Org(1),
            "2026-10-14T12:00:00Z",
            "2026-10-15",
            "2026-10-14T10:00:00Z",
        ),
    ] {
        let db = TestDb::alone();
        let org = subject.org_id();
        match subject {
            Subject::User(id) => db.add_user(id, "America/New_York"),
            Subject::Org(id) => {
                db.add_user(7, "America/Los_Angeles");
                db.add_organization_with_members(id, "Pacific/Kiritimati", Some(31), &[7]);
            }
        }
        spent(&db, 7, org, 50, "2026-11-23T09:00:00Z");
        let ctx = db.ctx();
        aggregate(&ctx, &mut db.conn()).unwrap();

        // With it, the same user spends 5 for another subject: in an organization without a
        // row (counted in UTC), or personally (on the Los Angeles day).
        let other = match subject {
            Subject::User(_) => Some(99),
            Subject::Org(_) => None,
        };
        spent(&db, 7, org, 1234, late);
        spent(&db, 7, other, 5, late);
        let report = aggregate(&ctx, &mut db.conn()).unwrap();
        assert_eq!(report.details["events"], 2, "{subject}");
        assert_eq!(summary_tokens(&db, 7, org, day), 1234, "{subject}");
        assert_eq!(summary_tokens(&db, 7, org, "2026-10-14"), 0);
        assert_eq!(summary_tokens(&db, 7, other, "2026-10-14"), 5);
        assert_eq!(summary_tokens(&db, 7, org, "2026-11-23"), 50);
        // The subject's day: from its own midnight.
        let (user_id, org_id) = subject.key();
        assert_eq!(
            db.count(&format!(
                "SELECT tokens AS n FROM usage_periods
                  WHERE user_id = {user_id} AND org_id = {org_id} AND period = 'day'
                    AND period_start = '{day_start}'"
            )),
            1234,
            "{subject}"
        );
        assert_eq!(summary_differences(&db), 0);
        assert_all_aggregated_exactly(&db);
        assert_subject_books_exact(&db);
    }
}

#[test]
fn a_subject_with_an_unknown_zone_or_without_a_row_is_counted_in_utc_and_reported_once() {
    for kind in [Subject::User, Subject::Org] {
        let db = TestDb::alone();
        // User 5 spends personally in Tokyo; subject 1 counts in an unknown zone, subject 8
        // has no row. User 5 spends for the organizations.
        db.add_user(5, "Asia/Tokyo");
        let (mars, missing) = (kind(1), kind(8));
        db.add_subject(mars, "Mars/Olympus", None, None);
        if let Subject::Org(id) = mars {
            db.add_member(id, 5, "member");
        }
        // Three transactions and a batch size of one: three aggregate transactions in one run.
        for _ in 0..3 {
            let spender = |subject: Subject| subject.user_id().unwrap_or(5);
            let org = |subject: Subject| subject.org_id().map_or("NULL".into(), |o| o.to_string());
            db.execute(&format!(
                "INSERT INTO usage_events (user_id, org_id, kind, tokens, created_at)
                 VALUES ({}, {}, 'ai_response', 10, '2026-11-22T20:00:00Z'),
                        ({}, {}, 'ai_response', 20, '2026-11-22T20:00:00Z'),
                        (5, NULL, 'ai_response', 10, '2026-11-22T20:00:00Z')",
                spender(mars),
                org(mars),
                spender(missing),
                org(missing)
            ));
        }
        let ctx = db.ctx_with(|s| s.aggregate.batch_events = 1);
        let report = aggregate(&ctx, &mut db.conn()).unwrap();

        assert_eq!(report.details["transactions"], 3);
        assert_unknown_zone_reported(&report, mars);
        // 20:00 UTC on the 22nd: the 23rd in Tokyo, still the 22nd in UTC.
        let tokens = |subject: Subject, day| {
            summary_tokens(&db, subject.user_id().unwrap_or(5), subject.org_id(), day)
        };
        assert_eq!(tokens(mars, "2026-11-22"), 30, "{mars}");
        assert_eq!(tokens(missing, "2026-11-22"), 60, "{missing}");
        assert_eq!(summary_tokens(&db, 5, None, "2026-11-23"), 30);
        assert_eq!(summary_tokens(&db, 5, None, "2026-11-22"), 0);
        assert_all_aggregated_exactly(&db);
        assert_subject_books_exact(&db);
    }
}

/// The run reports subject 1's unknown zone and subject 8's missing row, of their kind only.
fn assert_unknown_zone_reported(report: &JobReport, mars: Subject) {
    let d = &report.details;
    let (unknown, ids, without_row, other, noun) = match mars {
        Subject::User(_) => (
            "unknown_timezone_users",
            "unknown_timezone_user_ids",
            "users_without_row",
            "unknown_timezone_orgs",
            "user(s)",
        ),
        Subject::Org(_) => (
            "unknown_timezone_orgs",
            "unknown_timezone_org_ids",
            "orgs_without_row",
            "unknown_timezone_users",
            "organization(s)",
        ),
    };
    assert_eq!(d[unknown], 1, "{d}");
    assert_eq!(d[ids], serde_json::json!([1]));
    assert_eq!(d[without_row], 1, "{d}");
    assert_eq!(d[other], 0, "{d}");
    if let Subject::Org(_) = mars {
        assert_eq!(d["org_ids_without_row"], serde_json::json!([8]));
    }
    let expected = format!("1 {noun} with an unknown time zone");
    assert!(report.summary.contains(&expected), "{}", report.summary);
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
    assert_eq!(summary_tokens(&db, 1, None, "2026-11-22"), 100);
    assert_eq!(
        db.count("SELECT count(*) AS n FROM token_usage_daily WHERE user_id = 2"),
        0
    );

    let rerun = aggregate(&ctx, &mut db.conn()).unwrap();
    assert_eq!(rerun.details["events"], 3);
    assert_eq!(summary_tokens(&db, 1, None, "2026-11-22"), 105);
    assert_eq!(summary_tokens(&db, 2, None, "2026-11-22"), 7);
    assert_all_aggregated_exactly(&db);
}

#[test]
fn a_personal_event_of_user_zero_and_an_organizations_event_never_mix() {
    let db = TestDb::alone();
    db.add_user(0, "Asia/Tokyo");
    db.add_user(5, "Europe/Berlin");
    db.add_organization_with_members(3, "America/New_York", None, &[0, 5]);
    // 20:00 UTC on the 22nd: the 23rd in Tokyo, the 22nd in New York.
    db.execute(
        "INSERT INTO usage_events (user_id, org_id, kind, tokens, created_at)
         VALUES (0, NULL, 'ai_response', 100, '2026-11-22T20:00:00Z'),
                (0, 3, 'ai_response', 20, '2026-11-22T20:00:00Z'),
                (5, 3, 'ai_response', 3, '2026-11-22T21:00:00Z')",
    );
    aggregate(&db.ctx(), &mut db.conn()).unwrap();
    // A second batch into the periods the first one opened.
    db.execute(
        "INSERT INTO usage_events (user_id, org_id, kind, tokens, created_at)
         VALUES (0, NULL, 'message_sent', 1, '2026-11-22T22:00:00Z'),
                (0, 3, 'message_sent', 1000, '2026-11-22T22:00:00Z')",
    );
    aggregate(&db.ctx(), &mut db.conn()).unwrap();

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

#[test]
fn a_run_follows_the_events_committed_while_it_works_then_ends() {
    let db = TestDb::alone();
    let insert = |n: i64| {
        format!(
            "INSERT INTO usage_events (user_id, kind, tokens, created_at)
             SELECT g % 500, 'ai_response', 1, '2026-11-23T09:00:00Z' FROM generate_series(1, {n}) g"
        )
    };
    db.execute(&insert(100_000));
    // Once the run's first transaction is under way (it has a transaction id), a writer
    // commits 200 transactions of 1,000 events, the first ones after the first pass's horizon.
    let writer = {
        let (url, insert) = (db.url.clone(), insert(1_000));
        thread::spawn(move || {
            let mut conn = support::connect(&url);
            let running = "SELECT count(*) AS n FROM pg_stat_activity
                            WHERE datname = current_database() AND backend_xid IS NOT NULL
                              AND pid <> pg_backend_pid()";
            while support::count(&mut conn, running).unwrap() == 0 {
                thread::sleep(Duration::from_millis(5));
            }
            for _ in 0..200 {
                conn.batch_execute(&insert).unwrap();
            }
        })
    };
    let report = aggregate(&db.ctx(), &mut db.conn()).unwrap();

    // The first pass added the 100,000 events waiting at its horizon, so the run went on with
    // a new horizon and added what the writer had committed meanwhile, pass after pass, until
    // a pass found less than 10,000 new events.
    let passes = report.details["passes"].as_u64().unwrap();
    let events = report.details["events"].as_u64().unwrap();
    assert!(passes >= 2 && events > 100_000, "{}", report.details);
    assert!(
        report.summary.contains(&format!("in {passes} passes")),
        "{}",
        report.summary
    );
    writer.join().unwrap();
    let rest = aggregate(&db.ctx(), &mut db.conn()).unwrap();
    assert_eq!(events + rest.details["events"].as_u64().unwrap(), 300_000);
    assert_all_aggregated_exactly(&db);
    // A run with nothing to add ends after its one pass.
    let idle = aggregate(&db.ctx(), &mut db.conn()).unwrap();
    assert_eq!(
        (&idle.details["events"], &idle.details["passes"]),
        (&0.into(), &1.into())
    );
}
