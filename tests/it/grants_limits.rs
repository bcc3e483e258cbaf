//! Credit grants and hard limits: `usage_record()` lets exactly the plan's limit plus the
//! balance of the grants active at the event's instant through concurrent callers, personally
//! and in an organization, while `aggregate` runs; `usage_check()` counts the balance; a
//! balance a later period already drew is not spent twice.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};

use usage_worker::jobs::aggregate::{self, Limit};
use usage_worker::subject::Subject;

use crate::grants::{assert_books_hold, draws, grant, refusal};
use crate::support::outcome::outcome;
use crate::support::quota::add_new_events_to_periods;
use crate::support::{TestDb, text};

const NOV_10: &str = "2026-11-10T12:00:00Z";

/// Plan 1: 10 requests a month, hard. User 1 (UTC) on it; organization 7 (UTC) on it, with
/// user 2 (no plan) as a member.
fn hard_plan(db: &TestDb) {
    db.execute(
        "INSERT INTO plans (id, name) VALUES (1, 'free');
         INSERT INTO plan_limits (plan_id, metric, period, kind, max_value, enforcement)
         VALUES (1, 'requests', 'month', '', 10, 'hard');
         INSERT INTO users (id, email, plan_id) VALUES (1, 'ada@example.com', 1),
                                                  (2, 'bob@example.com', NULL);
         INSERT INTO organizations (id, name, plan_id) VALUES (7, 'Acme', 1);
         INSERT INTO organization_members (org_id, user_id, role) VALUES (7, 2, 'member');",
    );
}

/// `calls` concurrent `usage_record()` calls of one request each for `subject` (user 1, or
/// user 2 in organization 7) at 2026-11-10 12:00, while `aggregate` runs all along: the
/// SQLSTATE of each (`00000` recorded).
fn concurrent_requests(db: &TestDb, subject: Subject, calls: usize) -> Vec<String> {
    let who = match subject {
        Subject::User(id) => format!("p_user_id => {id}"),
        Subject::Org(id) => format!("p_user_id => 2, p_org_id => {id}"),
    };
    let sql =
        format!("SELECT usage_record({who}, p_kind => 'message_sent', p_created_at => '{NOV_10}')");
    let stop = Arc::new(AtomicBool::new(false));
    let aggregator = {
        let (mut conn, stop) = (db.conn(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let horizon = Limit::Horizon { also_below: None };
                aggregate::transaction(&mut conn, 1_000_000, horizon).expect("aggregate");
            }
        })
    };
    let start = Arc::new(Barrier::new(calls));
    let callers: Vec<_> = (0..calls)
        .map(|_| {
            let (mut conn, start, sql) = (db.conn(), start.clone(), sql.clone());
            std::thread::spawn(move || {
                start.wait();
                outcome(&mut conn, &sql).map_or_else(|f| f.sqlstate, |()| "00000".to_string())
            })
        })
        .collect();
    let outcomes = callers.into_iter().map(|c| c.join().unwrap()).collect();
    stop.store(true, Ordering::Relaxed);
    aggregator.join().unwrap();
    outcomes
}

#[test]
fn thirty_concurrent_calls_against_a_hard_limit_of_ten_plus_a_grant_of_five_record_fifteen() {
    let db = TestDb::alone();
    hard_plan(&db);
    for (subject, who, call) in [
        (Subject::User(1), "p_user_id => 1", "quota_status(1"),
        (Subject::Org(7), "p_org_id => 7", "org_quota_status(7"),
    ] {
        let five = grant(
            &db,
            who,
            "requests",
            5,
            ("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z"),
        );
        // Not active at the calls' instant: one starts later in the month, one has expired.
        grant(
            &db,
            who,
            "requests",
            100,
            ("2026-11-20T00:00:00Z", "2026-12-01T00:00:00Z"),
        );
        grant(
            &db,
            who,
            "requests",
            100,
            ("2026-10-01T00:00:00Z", "2026-11-05T00:00:00Z"),
        );
        if subject == Subject::User(1) {
            let remaining = format!(
                "SELECT remaining::bigint AS n
                   FROM usage_check(p_user_id => 1, p_kind => 'message_sent', p_created_at => '{NOV_10}')"
            );
            assert_eq!(db.count(&remaining), 15, "usage_check counts the balance");
        }
        let outcomes = concurrent_requests(&db, subject, 30);
        let recorded = outcomes.iter().filter(|o| *o == "00000").count();
        let refused = outcomes.iter().filter(|o| *o == "UQ001").count();
        assert_eq!((recorded, refused), (15, 15), "{subject}: {outcomes:?}");
        let status = format!(
            "SELECT format('%s %s %s %s', used, remaining, exceeded::text, grant_remaining) AS t
               FROM {call}, '{NOV_10}') WHERE metric = 'requests' AND period = 'month'"
        );
        assert_eq!(text(&mut db.conn(), &status), "15 0 true 0", "{subject}");
        add_new_events_to_periods(&mut db.conn());
        let drawn = draws(&db);
        assert!(
            drawn.contains(&format!("{five} 2026-11 5")),
            "{subject}: {drawn}"
        );
        assert_books_hold(&db, &subject.to_string());
    }
}

/// `usage_record()` of one request of user 1 at `at`: `00000`, or the SQLSTATE and message.
fn request_at(db: &TestDb, at: &str) -> String {
    refusal(
        db,
        &format!(
            "SELECT usage_record(p_user_id => 1, p_kind => 'message_sent', p_created_at => '{at}')"
        ),
    )
}

#[test]
fn a_late_event_cannot_spend_a_balance_that_a_later_month_already_drew() {
    let db = TestDb::new();
    hard_plan(&db);
    let five = grant(
        &db,
        "p_user_id => 1",
        "requests",
        5,
        ("2026-11-01T00:00:00Z", "2027-01-01T00:00:00Z"),
    );
    // November: the plan's 10. December: the plan's 10 and the grant's 5; no more.
    for (at, times) in [("2026-11-10T00:00:00Z", 10), ("2026-12-10T00:00:00Z", 15)] {
        for n in 0..times {
            assert_eq!(request_at(&db, at), "00000", "{at}: request {n}");
        }
    }
    assert!(request_at(&db, "2026-12-10T00:00:00Z").starts_with("UQ001 "));
    // A November event recorded late: November's plan is used up and the grant's 5 are
    // December's. Taking one of them for November would put December one past its limit.
    let late = request_at(&db, "2026-11-20T00:00:00Z");
    let november = text(
        &mut db.conn(),
        "SELECT format('%s %s', used, grant_remaining) AS t FROM quota_status(1, '2026-11-20T00:00:00Z')
          WHERE metric = 'requests' AND period = 'month'",
    );
    assert!(
        late.starts_with("UQ001 "),
        "the late event was recorded ({late}); November used and grant_remaining: {november}"
    );
    assert_eq!(
        db.count("SELECT count(*) AS n FROM usage_events"),
        25,
        "2 x 10 + 5"
    );
    add_new_events_to_periods(&mut db.conn());
    assert_eq!(draws(&db), format!("{five} 2026-12 5"));
    assert_books_hold(&db, "after the late event");
}
