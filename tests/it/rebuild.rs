//! Rebuilding the daily summary from the raw events (`--run aggregate --from --to`): rows
//! changed, deleted or invented by hand are restored exactly, whichever subject's they are; a
//! dry run only reports; the rebuild leaves events above the watermark to the incremental
//! path. Every test runs alone on its cluster ([`TestDb::alone`]): a transaction open anywhere
//! in the cluster holds the aggregation watermark back.

use chrono::NaiveDate;
use usage_worker::jobs::{JobKind, JobReport, RunOpts};
use usage_worker::subject::Subject;

use crate::support::books::{assert_all_aggregated_exactly, summary_differences, summary_tokens};
use crate::support::{TestDb, text};

const NOW: &str = "2026-11-23T10:00:00Z";

fn date(text: &str) -> NaiveDate {
    text.parse().unwrap()
}

fn aggregate(db: &TestDb) -> JobReport {
    db.run_job(JobKind::Aggregate, NOW, &RunOpts::default())
        .unwrap()
}

fn rebuild(db: &TestDb, from: &str, to: &str, dry_run: bool) -> JobReport {
    let opts = RunOpts {
        from: Some(date(from)),
        to: Some(date(to)),
        dry_run,
        ..RunOpts::default()
    };
    db.run_job(JobKind::Aggregate, NOW, &opts).unwrap()
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

/// Users 1 (Berlin) and 2 (Los Angeles), members of organization 4 (Kolkata), spend every hour
/// of October 2026 in turn, two events in three in the organization; all aggregated.
fn a_month_of_personal_and_shared_usage(db: &TestDb) {
    db.add_user(1, "Europe/Berlin");
    db.add_user(2, "America/Los_Angeles");
    db.add_organization_with_members(4, "Asia/Kolkata", None, &[1, 2]);
    db.execute(
        "INSERT INTO usage_events (user_id, org_id, kind, model, tokens, cost, created_at)
         SELECT 1 + g % 2, CASE WHEN g % 3 > 0 THEN 4 END, 'ai_response', 'gpt-4o', g, g * 0.001,
                '2026-10-01T00:00:00Z'::timestamptz + g * interval '1 hour'
           FROM generate_series(0, 24 * 31) g",
    );
    aggregate(db);
    assert_eq!(summary_differences(db), 0);
}

/// Changes the subject's rows of 2026-10-10, deletes those of 10-11 and invents one on 10-12.
/// How many rows it touched.
fn tamper(db: &TestDb, subject: Subject) -> i64 {
    let (user, org, rows) = match subject {
        Subject::User(id) => (
            id,
            "NULL".to_string(),
            format!("user_id = {id} AND org_id IS NULL"),
        ),
        Subject::Org(id) => (1, id.to_string(), format!("org_id = {id}")),
    };
    let on = |day: &str| {
        db.count(&format!(
            "SELECT count(*) AS n FROM token_usage_daily WHERE {rows} AND day = '{day}'"
        ))
    };
    let touched = on("2026-10-10") + on("2026-10-11") + 1;
    db.execute(&format!(
        "UPDATE token_usage_daily SET tokens = tokens + 5, cost = cost + 0.01
          WHERE {rows} AND day = '2026-10-10';
         DELETE FROM token_usage_daily WHERE {rows} AND day = '2026-10-11';
         INSERT INTO token_usage_daily (user_id, org_id, day, kind, request_type, model, events, tokens)
         VALUES ({user}, {org}, '2026-10-12', 'file_upload', '', '', 1, 99)"
    ));
    touched
}

#[test]
fn rebuild_after_tampering_restores_a_subjects_exact_rows_and_dry_run_only_reports() {
    for (subject, changed, deleted) in [(Subject::User(1), 1, 1), (Subject::Org(4), 2, 2)] {
        let db = TestDb::alone();
        a_month_of_personal_and_shared_usage(&db);
        let aggregated = summary_rows(&db);
        assert_eq!(tamper(&db, subject), changed + deleted + 1, "{subject}");
        // An event after the last run is above the watermark: the rebuild must leave it to
        // the incremental path.
        let (user, org) = (subject.user_id().unwrap_or(2), subject.org_id());
        let org = org.map_or("NULL".to_string(), |o| o.to_string());
        db.execute(&format!(
            "INSERT INTO usage_events (user_id, org_id, kind, model, tokens, created_at)
             VALUES ({user}, {org}, 'ai_response', 'gpt-4o', 1000, '2026-10-10T12:00:00Z')"
        ));
        // A changed row disagrees both ways, a deleted and an invented one once each.
        let differing = changed + deleted + 1;
        assert_eq!(summary_differences(&db), 2 * changed + deleted + 1);

        let dry = rebuild(&db, "2026-10-09", "2026-10-12", true);
        assert_eq!(dry.details["rows_differing"], differing, "{}", dry.details);
        assert_eq!(
            dry.details["differences"].as_array().unwrap().len() as i64,
            differing
        );
        assert_eq!(summary_differences(&db), 2 * changed + deleted + 1);

        let report = rebuild(&db, "2026-10-09", "2026-10-12", false);
        assert_eq!(report.details["rows_differing"], differing);
        let (key, id) = subject.report_key();
        assert!(
            report.details["differences"]
                .as_array()
                .unwrap()
                .iter()
                .all(|d| d[key] == id),
            "{}",
            report.details
        );
        assert_eq!(summary_differences(&db), 0);
        assert_eq!(summary_rows(&db), aggregated);
        assert_eq!(
            rebuild(&db, "2026-10-01", "2026-10-31", false).details["rows_differing"],
            0
        );

        aggregate(&db);
        assert_all_aggregated_exactly(&db);
    }
}

#[test]
fn rebuild_of_one_user_leaves_the_other_users_rows_alone() {
    let db = TestDb::alone();
    db.execute(
        "INSERT INTO usage_events (user_id, kind, tokens, created_at)
         VALUES (1, 'ai_response', 10, '2026-10-05T12:00:00Z'),
                (2, 'ai_response', 20, '2026-10-05T12:00:00Z')",
    );
    aggregate(&db);
    db.execute("UPDATE token_usage_daily SET tokens = 0");
    let opts = RunOpts {
        from: Some(date("2026-10-05")),
        to: Some(date("2026-10-05")),
        user_id: Some(2),
        ..RunOpts::default()
    };
    db.run_job(JobKind::Aggregate, NOW, &opts).unwrap();
    assert_eq!(summary_tokens(&db, 2, None, "2026-10-05"), 20);
    assert_eq!(summary_tokens(&db, 1, None, "2026-10-05"), 0);
}

#[test]
fn user_without_range_and_half_ranges_are_refused_with_a_hint() {
    let db = TestDb::alone();
    for opts in [
        RunOpts {
            user_id: Some(1),
            ..RunOpts::default()
        },
        RunOpts {
            from: Some(date("2026-10-05")),
            ..RunOpts::default()
        },
        RunOpts {
            from: Some(date("2026-10-06")),
            to: Some(date("2026-10-05")),
            ..RunOpts::default()
        },
    ] {
        let err = db
            .run_job(JobKind::Aggregate, NOW, &opts)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--from") && err.contains("aggregate"), "{err}");
    }
}
