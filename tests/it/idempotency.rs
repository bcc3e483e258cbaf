//! Idempotent recording: `usage_record(…, p_idempotency_key)` counts a retried event once,
//! within `ingest.idempotency_days`, and `retention` forgets the keys after it.

use std::sync::{Arc, Barrier};

use diesel::pg::PgConnection;
use diesel::result::{DatabaseErrorKind, Error};
use usage_worker::jobs::{JobKind, RunOpts};
use usage_worker::scheduler::prepare_database;

use crate::support::{self, TestDb, count};

/// Users 1 and 2 in organization 2, user 3 outside it.
const MEMBERS: &str = "
INSERT INTO users (id, email) VALUES (1, 'ada@example.com'), (2, 'bob@example.com'),
                                     (3, 'cy@example.com');
INSERT INTO organizations (id, name) VALUES (2, 'two');
INSERT INTO organization_members (org_id, user_id, role) VALUES (2, 1, 'owner'), (2, 2, 'member');
";

/// `usage_record` of 10 tokens by `user` (in organization `org`, if any) at `created_at`
/// with `key`; the id it returns.
fn record(
    conn: &mut PgConnection,
    user: i64,
    org: Option<i64>,
    key: &str,
    created_at: &str,
) -> Result<i64, Error> {
    let org = org.map_or("NULL".to_string(), |o| o.to_string());
    count(
        conn,
        &format!(
            "SELECT usage_record(p_user_id => {user}, p_kind => 'ai_response', p_tokens => 10,
                                 p_created_at => '{created_at}', p_org_id => {org},
                                 p_idempotency_key => '{key}') AS n"
        ),
    )
}

fn db_with_members() -> TestDb {
    let db = TestDb::new();
    db.execute(MEMBERS);
    db
}

#[test]
fn fifty_concurrent_retries_with_one_key_record_one_event_and_all_return_its_id() {
    let db = db_with_members();
    let retries = 50;
    let start = Arc::new(Barrier::new(retries));
    let callers: Vec<_> = (0..retries)
        .map(|i| {
            let mut conn = db.conn();
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                let created_at = format!("2026-11-10T10:{:02}:00Z", i);
                record(&mut conn, 1, None, "retry-7f3a", &created_at)
                    .unwrap_or_else(|e| panic!("call {i}: {e}"))
            })
        })
        .collect();
    let ids: Vec<i64> = callers
        .into_iter()
        .map(|caller| caller.join().expect("caller thread"))
        .collect();

    assert_eq!(db.count("SELECT count(*) AS n FROM usage_events"), 1);
    let event = db.count("SELECT id AS n FROM usage_events");
    assert!(
        ids.iter().all(|&id| id == event),
        "{ids:?} vs event {event}"
    );
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) AS n FROM usage_idempotency_keys
              WHERE idempotency_key = 'retry-7f3a' AND event_id = {event}"
        )),
        1
    );
}

#[test]
fn personal_keys_are_per_user_and_organization_keys_per_organization() {
    let db = db_with_members();
    let mut conn = db.conn();
    let at = "2026-11-10T10:00:00Z";
    let ada = record(&mut conn, 1, None, "k", at).unwrap();
    let bob = record(&mut conn, 2, None, "k", at).unwrap();
    assert_ne!(ada, bob, "another user's personal key is another key");
    assert_eq!(record(&mut conn, 2, None, "k", at).unwrap(), bob);

    let team = record(&mut conn, 1, Some(2), "k", at).unwrap();
    assert!(
        team != ada && team != bob,
        "a key in an organization is not the personal one"
    );
    assert_eq!(
        record(&mut conn, 2, Some(2), "k", "2026-11-10T10:05:00Z").unwrap(),
        team,
        "two members of one organization share its keys"
    );
    assert_eq!(db.count("SELECT count(*) AS n FROM usage_events"), 3);
    assert_eq!(
        db.count("SELECT count(*) AS n FROM usage_events WHERE org_id = 2"),
        1
    );
}

#[test]
fn a_key_older_than_the_window_records_a_new_event() {
    let db = db_with_members();
    let mut conn = db.conn();
    let first = record(&mut conn, 1, None, "k", "2026-11-10T10:00:00Z").unwrap();
    let age = |days: i64| {
        format!(
            "UPDATE usage_idempotency_keys SET recorded_at = now() - interval '{days} days 1 minute'"
        )
    };

    // Within ingest.idempotency_days as the worker wrote it at start (30 here).
    let ctx = db.ctx_with(|s| s.ingest.idempotency_days = 30);
    prepare_database(&ctx).expect("prepare the database");
    assert_eq!(
        db.count("SELECT idempotency_days::bigint AS n FROM usage_settings"),
        30
    );
    db.execute(&age(8));
    assert_eq!(
        record(&mut conn, 1, None, "k", "2026-11-10T10:00:00Z").unwrap(),
        first
    );

    // Past it: the key is taken over by a new event, which retries then find.
    let ctx = db.ctx_with(|s| s.ingest.idempotency_days = 7);
    prepare_database(&ctx).expect("prepare the database");
    let second = record(&mut conn, 1, None, "k", "2026-11-18T10:00:00Z").unwrap();
    assert_ne!(second, first);
    assert_eq!(
        record(&mut conn, 1, None, "k", "2026-11-18T10:00:00Z").unwrap(),
        second
    );
    assert_eq!(db.count("SELECT count(*) AS n FROM usage_events"), 2);
}

#[test]
fn retention_trims_keys_older_than_the_window_and_a_dry_run_only_counts_them() {
    let db = db_with_members();
    let mut conn = db.conn();
    for (key, recorded) in [
        ("old", "2026-11-10T00:00:00Z"),
        ("older", "2026-10-01T00:00:00Z"),
        ("fresh", "2026-11-18T00:00:00Z"),
    ] {
        record(&mut conn, 1, None, key, "2026-11-01T10:00:00Z").unwrap();
        db.execute(&format!(
            "UPDATE usage_idempotency_keys SET recorded_at = '{recorded}' WHERE idempotency_key = '{key}'"
        ));
    }
    let keys_report = |report: &usage_worker::jobs::JobReport| {
        report.details["tables"]["usage_idempotency_keys"].clone()
    };

    let dry = db
        .dry_run_job(JobKind::Retention, "2026-11-20T00:00:00Z")
        .unwrap();
    assert_eq!(keys_report(&dry)["rows_deleted"], 2, "{}", dry.details);
    assert_eq!(
        db.count("SELECT count(*) AS n FROM usage_idempotency_keys"),
        3
    );

    let run = db
        .run_job(
            JobKind::Retention,
            "2026-11-20T00:00:00Z",
            &RunOpts::default(),
        )
        .unwrap();
    assert_eq!(keys_report(&run)["rows_deleted"], 2, "{}", run.details);
    assert_eq!(
        keys_report(&run)["cutoff"],
        "2026-11-13T00:00:00Z",
        "7 days, the default window"
    );
    assert_eq!(
        support::text(
            &mut conn,
            "SELECT string_agg(idempotency_key, ',') AS t FROM usage_idempotency_keys"
        ),
        "fresh"
    );
    assert_eq!(
        db.count("SELECT count(*) AS n FROM usage_events"),
        3,
        "the events stay"
    );
}

#[test]
fn an_organization_the_user_is_not_a_member_of_is_refused_by_name() {
    let db = db_with_members();
    let refused = record(&mut db.conn(), 3, Some(2), "k", "2026-11-10T10:00:00Z")
        .expect_err("user 3 is not in organization 2");
    match refused {
        Error::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, info) => {
            assert_eq!(info.constraint_name(), Some("usage_record_org_member"));
            assert!(
                info.message().contains("user 3") && info.message().contains("organization 2"),
                "{}",
                info.message()
            );
        }
        other => panic!("expected usage_record_org_member, got {other:?}"),
    }
    assert_eq!(db.count("SELECT count(*) AS n FROM usage_events"), 0);
    assert_eq!(
        db.count("SELECT count(*) AS n FROM usage_idempotency_keys"),
        0
    );
}

#[test]
fn a_retry_after_the_user_left_the_organization_still_returns_the_first_events_id() {
    let db = db_with_members();
    let mut conn = db.conn();
    let first = record(&mut conn, 2, Some(2), "k-left", "2026-11-10T10:00:00Z").unwrap();
    db.execute("DELETE FROM organization_members WHERE org_id = 2 AND user_id = 2");
    let retry = record(&mut conn, 2, Some(2), "k-left", "2026-11-10T10:05:00Z")
        .expect("a retry of a recorded key is answered, member or not");
    assert_eq!(retry, first);
    // A new key of the former member is refused, and leaves no key behind.
    record(&mut conn, 2, Some(2), "k-new", "2026-11-10T10:06:00Z")
        .expect_err("user 2 has left organization 2");
    assert_eq!(db.count("SELECT count(*) AS n FROM usage_events"), 1);
    assert_eq!(
        db.count("SELECT count(*) AS n FROM usage_idempotency_keys"),
        1
    );
}

#[test]
fn migrate_writes_the_window_and_a_bad_one_exits_78_naming_the_key() {
    let db = TestDb::new();
    let mut migrate = db.binary();
    migrate
        .env("USAGE_WORKER__INGEST__IDEMPOTENCY_DAYS", "90")
        .arg("--migrate");
    let out = support::output(migrate);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        db.count("SELECT idempotency_days::bigint AS n FROM usage_settings"),
        90
    );

    for bad in ["0", "3651", "a week"] {
        let mut check = db.binary();
        check
            .env("USAGE_WORKER__INGEST__IDEMPOTENCY_DAYS", bad)
            .arg("--check-config");
        let out = support::output(check);
        assert_eq!(out.code, 78, "{bad}: {}\n{}", out.stdout, out.stderr);
        assert!(
            out.stderr.contains("ingest.idempotency_days"),
            "{bad}: {}",
            out.stderr
        );
    }
}
