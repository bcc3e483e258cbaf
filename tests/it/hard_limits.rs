//! Hard limits (`plan_limits.enforcement = 'hard'`): `usage_record()` refuses an event that
//! would take its subject past one, with SQLSTATE UQ001, records nothing, and lets exactly
//! the allowed amount through concurrent callers, personally and in an organization, also
//! while `aggregate` runs. `usage_check()` answers the same question beforehand, with the
//! same errors for bad arguments. The seeds' limits hold at their real numbers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use usage_worker::jobs::aggregate::{self, Limit};
use usage_worker::subject::Subject;

use crate::support::{self, TestDb, count};

/// The instant every call here happens at (`p_created_at`, `p_at`): the test's own clock.
const AT: &str = "2026-11-10T12:00:00Z";

/// Plan 1 with `limits` ((metric, period, kind, max, enforcement)), user 1 (Europe/Berlin) on
/// it, organization 7 (Asia/Kolkata) on it with user 1 as owner and user 2 as member.
fn seed(db: &TestDb, limits: &[(&str, &str, &str, i64, &str)]) {
    let values: Vec<String> = limits
        .iter()
        .map(|(metric, period, kind, max, enforcement)| {
            format!("(1, '{metric}', '{period}', '{kind}', {max}, '{enforcement}')")
        })
        .collect();
    db.execute(&format!(
        "INSERT INTO plans (id, name) VALUES (1, 'free');
         INSERT INTO plan_limits (plan_id, metric, period, kind, max_value, enforcement)
         VALUES {};
         INSERT INTO users (id, email, timezone, plan_id)
         VALUES (1, 'ada@example.com', 'Europe/Berlin', 1), (2, 'bob@example.com', 'UTC', NULL);
         INSERT INTO organizations (id, name, timezone, plan_id) VALUES (7, 'Acme', 'Asia/Kolkata', 1);
         INSERT INTO organization_members (org_id, user_id, role) VALUES (7, 1, 'owner'), (7, 2, 'member');",
        values.join(", ")
    ));
}

/// The subjects every test runs over: user 1's personal quota and organization 7's.
const SUBJECTS: [Subject; 2] = [Subject::User(1), Subject::Org(7)];

/// The `p_user_id, … p_org_id` arguments that record usage for `subject` (in an organization
/// by its member user 2).
fn who(subject: Subject) -> String {
    match subject {
        Subject::User(id) => format!("p_user_id => {id}"),
        Subject::Org(id) => format!("p_user_id => 2, p_org_id => {id}"),
    }
}

/// Runs `sql` and returns `00000`, or the SQLSTATE and message it failed with.
fn outcome(conn: &mut PgConnection, sql: &str) -> String {
    match support::outcome::outcome(conn, sql) {
        Ok(()) => "00000".to_string(),
        Err(f) => format!("{} {}", f.sqlstate, f.message),
    }
}

/// `usage_record` for `subject` of an event of `kind` with `amounts` (`p_tokens => 5`, …).
fn record_sql(subject: Subject, kind: &str, amounts: &str) -> String {
    let amounts = if amounts.is_empty() {
        String::new()
    } else {
        format!(", {amounts}")
    };
    format!(
        "SELECT usage_record({}, p_kind => '{kind}', p_created_at => '{AT}'{amounts})",
        who(subject)
    )
}

fn events_of(db: &TestDb, subject: Subject) -> i64 {
    let (user_id, org_id) = subject.key();
    db.count(&format!(
        "SELECT count(*) AS n FROM usage_events e
           JOIN usage_event_subject(e.user_id, e.org_id) s ON true
          WHERE s.user_id = {user_id} AND s.org_id = {org_id}"
    ))
}

#[test]
fn a_hundred_concurrent_calls_against_a_hard_limit_of_twenty_record_exactly_twenty() {
    let db = TestDb::alone();
    seed(&db, &[("requests", "day", "image_generation", 20, "hard")]);
    for subject in SUBJECTS {
        // aggregate runs all along: events move from pending to the periods under the calls.
        let stop = Arc::new(AtomicBool::new(false));
        let aggregator = {
            let (mut conn, stop) = (db.conn(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    aggregate::transaction(
                        &mut conn,
                        1_000_000,
                        Limit::Horizon { also_below: None },
                    )
                    .expect("aggregate");
                }
            })
        };
        let calls = 100;
        let start = Arc::new(Barrier::new(calls));
        let callers: Vec<_> = (0..calls)
            .map(|_| {
                let (mut conn, start) = (db.conn(), start.clone());
                let sql = record_sql(subject, "image_generation", "");
                std::thread::spawn(move || {
                    start.wait();
                    outcome(&mut conn, &sql)
                })
            })
            .collect();
        let outcomes: Vec<String> = callers.into_iter().map(|c| c.join().unwrap()).collect();
        stop.store(true, Ordering::Relaxed);
        aggregator.join().unwrap();
        let recorded = outcomes.iter().filter(|o| *o == "00000").count();
        let refused = outcomes.iter().filter(|o| o.starts_with("UQ001 ")).count();
        assert_eq!((recorded, refused), (20, 80), "{subject}: {outcomes:?}");
        assert_eq!(events_of(&db, subject), 20, "{subject}");
    }
}

#[test]
fn a_refused_event_records_nothing_and_names_the_metric_period_kind_limit_use_and_reset() {
    let db = TestDb::new();
    seed(&db, &[("tokens", "day", "", 1000, "hard")]);
    let mut conn = db.conn();
    for subject in SUBJECTS {
        assert_eq!(
            outcome(
                &mut conn,
                &record_sql(subject, "ai_response", "p_tokens => 990")
            ),
            "00000"
        );
        let refused = outcome(
            &mut conn,
            &record_sql(subject, "ai_response", "p_tokens => 20"),
        );
        let (who, reset) = match subject {
            Subject::User(_) => ("user 1", "2026-11-11 00:00:00 Europe/Berlin"),
            Subject::Org(_) => ("organization 7", "2026-11-11 00:00:00 Asia/Kolkata"),
        };
        for part in [
            "UQ001 ",
            who,
            "tokens per day (all kinds) is 1000",
            "990 used",
            "adds 20",
            reset,
        ] {
            assert!(refused.contains(part), "{subject}: {part} in {refused}");
        }
        assert_eq!(events_of(&db, subject), 1, "{subject}: nothing recorded");
        // What fits still goes through: exactly up to the limit.
        assert_eq!(
            outcome(
                &mut conn,
                &record_sql(subject, "ai_response", "p_tokens => 10")
            ),
            "00000"
        );
    }
}

#[test]
fn a_hard_limit_of_zero_refuses_every_event_that_adds_to_its_metric() {
    let db = TestDb::new();
    seed(
        &db,
        &[
            ("requests", "month", "image_generation", 0, "hard"),
            ("tokens", "month", "", 0, "hard"),
        ],
    );
    let mut conn = db.conn();
    for subject in SUBJECTS {
        for (kind, amounts) in [("image_generation", ""), ("ai_response", "p_tokens => 1")] {
            let sql = record_sql(subject, kind, amounts);
            assert!(
                outcome(&mut conn, &sql).starts_with("UQ001 "),
                "{subject}: {sql}"
            );
        }
        // A message adds no tokens and is no image: no limit of 0 applies to it.
        let message = record_sql(subject, "message_sent", "p_messages => 1");
        assert_eq!(outcome(&mut conn, &message), "00000", "{subject}");
    }
}

#[test]
fn a_limit_made_hard_holds_from_the_next_call_and_a_plain_insert_is_never_held() {
    let db = TestDb::new();
    seed(&db, &[("requests", "day", "", 2, "soft")]);
    let mut conn = db.conn();
    for subject in SUBJECTS {
        for _ in 0..3 {
            let sql = record_sql(subject, "message_sent", "p_messages => 1");
            assert_eq!(outcome(&mut conn, &sql), "00000", "{subject}: soft");
        }
    }
    db.execute("UPDATE plan_limits SET enforcement = 'hard'");
    for subject in SUBJECTS {
        let sql = record_sql(subject, "message_sent", "p_messages => 1");
        assert!(outcome(&mut conn, &sql).starts_with("UQ001 "), "{subject}");
    }
    // The unenforced fast path: a plain INSERT is the application's own decision.
    db.execute(&format!(
        "INSERT INTO usage_events (user_id, kind, messages, created_at)
         VALUES (1, 'message_sent', 1, '{AT}')"
    ));
    assert_eq!(events_of(&db, Subject::User(1)), 4);
}

#[test]
fn a_repeatable_read_transaction_is_refused_where_a_hard_limit_must_be_checked() {
    let db = TestDb::new();
    seed(&db, &[("requests", "day", "", 5, "hard")]);
    let mut conn = db.conn();
    conn.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .unwrap();
    let refused = outcome(&mut conn, &record_sql(Subject::User(1), "message_sent", ""));
    assert!(
        refused.starts_with("UQ002 ") && refused.contains("REPEATABLE READ"),
        "{refused}"
    );
    conn.batch_execute("ROLLBACK").unwrap();
    // SERIALIZABLE and READ COMMITTED (the default) record.
    conn.batch_execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
        .unwrap();
    let sql = record_sql(Subject::User(1), "message_sent", "");
    assert_eq!(outcome(&mut conn, &sql), "00000");
    conn.batch_execute("COMMIT").unwrap();
    // A subject without a hard limit records in any isolation level.
    conn.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .unwrap();
    let personal_of_user_2 = "SELECT usage_record(p_user_id => 2, p_kind => 'message_sent', p_created_at => '2026-11-10T12:00:00Z')";
    assert_eq!(outcome(&mut conn, personal_of_user_2), "00000");
    conn.batch_execute("COMMIT").unwrap();
}

#[test]
fn a_retry_of_a_recorded_event_is_answered_with_its_id_even_at_the_limit() {
    let db = TestDb::new();
    seed(&db, &[("requests", "day", "", 1, "hard")]);
    let mut conn = db.conn();
    for subject in SUBJECTS {
        let sql = format!(
            "SELECT usage_record({}, p_kind => 'message_sent', p_created_at => '{AT}',
                                p_idempotency_key => 'req-1') AS n",
            who(subject)
        );
        let first = count(&mut conn, &sql).unwrap();
        assert_eq!(
            count(&mut conn, &sql).unwrap(),
            first,
            "{subject}: the retry"
        );
        let other = record_sql(subject, "message_sent", "p_idempotency_key => 'req-2'");
        assert!(
            outcome(&mut conn, &other).starts_with("UQ001 "),
            "{subject}"
        );
        assert_eq!(events_of(&db, subject), 1, "{subject}");
    }
}
