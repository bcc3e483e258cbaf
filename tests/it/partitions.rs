use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::Text;
use usage_worker::jobs::partitions::existing_partitions;
use usage_worker::jobs::{JobKind, RunOpts};

use crate::support::{self, TestDb, at};

fn partitions(db: &TestDb) -> Vec<String> {
    existing_partitions(&mut db.conn())
        .unwrap()
        .into_iter()
        .collect()
}

#[test]
fn partitions_cover_the_current_month_and_three_ahead_and_a_rerun_changes_nothing() {
    let db = TestDb::new();
    let ctx = db.ctx();
    let now = at("2027-01-15T00:00:00Z");
    let report = JobKind::Partitions
        .run(&ctx, &mut db.conn(), now, &RunOpts::default())
        .unwrap();
    assert_eq!(
        partitions(&db),
        vec![
            "usage_events_2027_01",
            "usage_events_2027_02",
            "usage_events_2027_03",
            "usage_events_2027_04"
        ]
    );
    assert_eq!(report.details["created"].as_array().unwrap().len(), 4);

    let again = JobKind::Partitions
        .run(&ctx, &mut db.conn(), now, &RunOpts::default())
        .unwrap();
    assert_eq!(again.details["created"].as_array().unwrap().len(), 0);
    assert_eq!(partitions(&db).len(), 4);
}

#[test]
fn dry_run_creates_nothing_but_reports_what_it_would_create() {
    let db = TestDb::new();
    let report = db
        .dry_run_job(JobKind::Partitions, "2027-01-15T00:00:00Z")
        .unwrap();
    assert_eq!(report.details["created"].as_array().unwrap().len(), 4);
    assert!(partitions(&db).is_empty());
}

#[test]
fn rows_in_the_default_partition_move_into_their_month_keeping_their_transaction_id() {
    let db = TestDb::new();
    db.execute(
        "INSERT INTO usage_events (user_id, kind, tokens, created_at)
         VALUES (1, 'ai_response', 10, '2026-08-31T23:59:59.999999Z'),
                (2, 'ai_response', 20, '2027-01-20T10:00:00Z')",
    );
    #[derive(QueryableByName)]
    struct Xid {
        #[diesel(sql_type = Text)]
        x: String,
    }
    let before: Vec<Xid> =
        diesel::sql_query("SELECT recorded_xid::text AS x FROM usage_events ORDER BY user_id")
            .load(&mut db.conn())
            .unwrap();

    JobKind::Partitions
        .run(
            &db.ctx(),
            &mut db.conn(),
            at("2027-01-15T00:00:00Z"),
            &RunOpts::default(),
        )
        .unwrap();

    assert_eq!(
        db.count("SELECT count(*) AS n FROM ONLY usage_events_default"),
        0
    );
    assert_eq!(
        db.count("SELECT count(*) AS n FROM usage_events_2026_08"),
        1
    );
    assert_eq!(
        db.count("SELECT count(*) AS n FROM usage_events_2027_01"),
        1
    );
    let after: Vec<Xid> =
        diesel::sql_query("SELECT recorded_xid::text AS x FROM usage_events ORDER BY user_id")
            .load(&mut db.conn())
            .unwrap();
    assert_eq!(
        before.iter().map(|x| &x.x).collect::<Vec<_>>(),
        after.iter().map(|x| &x.x).collect::<Vec<_>>()
    );
}

#[test]
fn an_insert_into_the_default_partition_racing_the_job_waits_and_lands_in_the_new_partition() {
    use diesel::connection::SimpleConnection;
    let db = TestDb::new();
    let ctx = db.ctx();
    // A writer's transaction has put an event of January (the first month the job creates)
    // into the default partition, not yet committed.
    let mut writer = db.conn();
    writer
        .batch_execute(
            "BEGIN;
             INSERT INTO usage_events (user_id, kind, tokens, created_at)
             VALUES (1, 'ai_response', 7, '2027-01-20T00:00:00Z');",
        )
        .unwrap();
    let job = std::thread::spawn(move || {
        JobKind::Partitions.run(
            &ctx,
            &mut db_conn(&ctx),
            at("2027-01-15T00:00:00Z"),
            &RunOpts::default(),
        )
    });
    // Let the job reach January's partition (it waits for the writer's lock), then commit.
    assert!(
        support::wait_until(Duration::from_secs(60), || db.count(
            "SELECT count(*) AS n FROM pg_stat_activity
              WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ) > 0),
        "the job never waited for the writer's lock"
    );
    writer.batch_execute("COMMIT").unwrap();

    let report = job.join().unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(
        db.count("SELECT count(*) AS n FROM usage_events_2027_01 WHERE tokens = 7"),
        1
    );
    assert_eq!(
        db.count("SELECT count(*) AS n FROM usage_events_default"),
        0
    );
}

fn db_conn(ctx: &usage_worker::jobs::Ctx) -> PgConnection {
    ctx.connect().unwrap()
}
