//! Reading the daily summary: a subject's usage summary by day, week, month and year, the
//! daily stats, and the CSV export of all rows or one subject's.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use usage_worker::export::{ExportScope, write_daily_csv};
use usage_worker::jobs::{JobKind, RunOpts};
use usage_worker::subject::Subject;

use crate::support::{self, TestDb, at};

const NOW: &str = "2026-11-23T10:00:00Z";

/// Summary rows of two subjects: user 1's personal usage, and organization 3's, spent by
/// members 1 and 2. Each has the same days; user 2's personal usage and user 1's in
/// organization 4 are neither's.
const SUMMARY_ROWS: &str = "
    INSERT INTO token_usage_daily (user_id, day, kind, request_type, model, events, tokens, cost,
                                   org_id)
    VALUES (1, '2026-10-31', 'ai_response', 'chat', 'gpt-4o', 2, 100, 0.5, NULL),
           (1, '2026-11-01', 'ai_response', 'chat', 'gpt-4o', 1, 10, 0.25, NULL),
           (1, '2026-11-02', 'message_sent', 'chat', '', 3, 0, 0, NULL),
           (1, '2026-10-31', 'ai_response', 'chat', 'gpt-4o', 2, 100, 0.5, 3),
           (2, '2026-11-01', 'ai_response', 'chat', 'gpt-4o', 1, 10, 0.25, 3),
           (1, '2026-11-02', 'message_sent', 'chat', '', 3, 0, 0, 3),
           (2, '2026-11-02', 'ai_response', '', '', 9, 999, 9, NULL),
           (1, '2026-11-02', 'ai_response', '', '', 5, 555, 5, 4)";

#[test]
fn a_subjects_usage_summary_sums_its_days_into_weeks_months_and_years() {
    let db = TestDb::new();
    db.execute(SUMMARY_ROWS);
    #[derive(QueryableByName, Debug, PartialEq)]
    struct Row {
        #[diesel(sql_type = Text)]
        period_start: String,
        #[diesel(sql_type = BigInt)]
        events: i64,
        #[diesel(sql_type = BigInt)]
        tokens: i64,
        #[diesel(sql_type = Text)]
        cost: String,
    }
    for subject in [Subject::User(1), Subject::Org(3)] {
        let (function, id) = match subject {
            Subject::User(id) => ("usage_summary", id),
            Subject::Org(id) => ("org_usage_summary", id),
        };
        let summary = |granularity: &str| -> Vec<(String, i64, i64, String)> {
            diesel::sql_query(format!(
                "SELECT period_start::text, events, tokens, cost::text
                   FROM {function}({id}, $1, '2026-10-01', '2026-11-30')"
            ))
            .bind::<Text, _>(granularity)
            .load::<Row>(&mut db.conn())
            .unwrap()
            .into_iter()
            .map(|r| (r.period_start, r.events, r.tokens, r.cost))
            .collect()
        };
        assert_eq!(summary("day").len(), 3, "{subject}");
        // 2026-10-31 is a Saturday: its ISO week starts on Monday 10-26; 11-02 starts the next.
        assert_eq!(
            summary("week"),
            vec![
                ("2026-10-26".into(), 3, 110, "0.75".into()),
                ("2026-11-02".into(), 3, 0, "0".into())
            ]
        );
        assert_eq!(
            summary("month"),
            vec![
                ("2026-10-01".into(), 2, 100, "0.5".into()),
                ("2026-11-01".into(), 4, 10, "0.25".into())
            ]
        );
        assert_eq!(
            summary("year"),
            vec![("2026-01-01".into(), 6, 110, "0.75".into())]
        );

        let err = diesel::sql_query(format!(
            "SELECT * FROM {function}({id}, 'fortnight', '2026-10-01', '2026-11-30')"
        ))
        .execute(&mut db.conn())
        .unwrap_err()
        .to_string();
        assert!(err.contains("fortnight") && err.contains("week"), "{err}");
    }
}

/// Runs alone on its cluster ([`TestDb::alone`]): a transaction open anywhere in the cluster
/// would hold the aggregation watermark back.
#[test]
fn stats_reports_yesterdays_totals_by_kind_and_top_models() {
    let db = TestDb::alone();
    db.execute(
        "INSERT INTO usage_events (user_id, kind, model, tokens, cost, created_at)
         VALUES (1, 'ai_response', 'gpt-4o', 100, 0.5, '2026-11-22T10:00:00Z'),
                (2, 'ai_response', 'claude-sonnet', 300, 0.25, '2026-11-22T11:00:00Z'),
                (2, 'message_sent', '', 0, 0, '2026-11-22T12:00:00Z'),
                (3, 'ai_response', 'gpt-4o', 999, 9, '2026-11-21T12:00:00Z')",
    );
    let ctx = db.ctx();
    let mut conn = db.conn();
    JobKind::Aggregate
        .run(&ctx, &mut conn, at(NOW), &RunOpts::default())
        .unwrap();
    let report = JobKind::Stats
        .run(&ctx, &mut conn, at(NOW), &RunOpts::default())
        .unwrap();
    let d = &report.details;
    assert_eq!(d["day"], "2026-11-22");
    assert_eq!(d["totals"]["events"], 3);
    assert_eq!(d["totals"]["active_users"], 2);
    assert_eq!(d["totals"]["tokens"], 400);
    assert_eq!(d["totals"]["cost"], "0.75000000");
    assert_eq!(d["by_kind"][0]["name"], "ai_response");
    assert_eq!(d["by_kind"][0]["events"], 2);
    assert_eq!(d["top_models"][0]["name"], "claude-sonnet");
    assert_eq!(d["top_models"][1]["name"], "gpt-4o");
    assert!(
        report
            .summary
            .starts_with("2026-11-22: 3 event(s), 2 active user(s)")
    );
}

/// The CSV export of the summary rows of `scope` in October 2026.
fn october_csv(db: &TestDb, scope: ExportScope) -> (u64, String) {
    let mut out = Vec::new();
    let rows = write_daily_csv(
        &mut db.conn(),
        "2026-10-01".parse().unwrap(),
        "2026-10-31".parse().unwrap(),
        scope,
        &mut out,
    )
    .unwrap();
    (rows, String::from_utf8(out).unwrap())
}

#[test]
fn csv_export_writes_a_header_and_the_summary_rows_of_the_range_with_exact_cost() {
    let db = TestDb::new();
    db.execute(
        "INSERT INTO token_usage_daily (user_id, day, kind, request_type, model, events, tokens, cost)
         VALUES (1, '2026-10-01', 'ai_response', 'chat', 'model, \"quoted\"', 2, 100, 0.12345678),
                (1, '2026-10-02', 'message_sent', 'chat', '', 1, 0, 0),
                (2, '2026-10-01', 'ai_response', '', '', 1, 5, 1),
                (2, '2026-11-01', 'ai_response', '', '', 1, 5, 1)",
    );
    let (rows, text) = october_csv(&db, ExportScope::All);
    assert_eq!(rows, 3);
    assert_eq!(
        text,
        "user_id,day,kind,request_type,model,events,tokens,prompt_tokens,completion_tokens,messages,bytes,cost,org_id\n\
         1,2026-10-01,ai_response,chat,\"model, \"\"quoted\"\"\",2,100,0,0,0,0,0.12345678,\n\
         1,2026-10-02,message_sent,chat,,1,0,0,0,0,0,0,\n\
         2,2026-10-01,ai_response,,,1,5,0,0,0,0,1,\n"
    );
}

#[test]
fn csv_export_of_one_subject_writes_only_its_rows_with_org_id_last() {
    let db = TestDb::new();
    // Members 1 and 2 spend in organization 7; 1 and 2 also personally, 3 only personally.
    db.execute(
        "INSERT INTO token_usage_daily (user_id, day, kind, request_type, model, events, tokens,
                                        cost, org_id)
         VALUES (1, '2026-10-05', 'ai_response', '', '', 2, 1234, 0.5, 7),
                (2, '2026-10-05', 'ai_response', '', '', 5, 70000, 2.25, 7),
                (3, '2026-10-05', 'ai_response', '', '', 9, 999999, 9, NULL),
                (1, '2026-10-06', 'message_sent', 'chat', '', 1, 0, 0, NULL),
                (1, '2026-11-01', 'ai_response', '', '', 1, 5, 0, 7),
                (2, '2026-11-01', 'ai_response', '', '', 1, 5, 1, NULL)",
    );
    let (rows, text) = october_csv(&db, ExportScope::Organization(7));
    assert_eq!(rows, 2);
    assert_eq!(
        text,
        "user_id,day,kind,request_type,model,events,tokens,prompt_tokens,completion_tokens,messages,bytes,cost,org_id\n\
         1,2026-10-05,ai_response,,,2,1234,0,0,0,0,0.5,7\n\
         2,2026-10-05,ai_response,,,5,70000,0,0,0,0,2.25,7\n"
    );
    // A user's rows are their personal usage and their usage in any organization.
    let (_, user_1) = october_csv(&db, ExportScope::User(1));
    assert!(
        user_1.ends_with(",0.5,7\n1,2026-10-06,message_sent,chat,,1,0,0,0,0,0,0,\n"),
        "{user_1}"
    );

    let dir = tempfile::tempdir().unwrap();
    for (subject, flag, lines) in [
        (Subject::User(2), "--user", 3),
        (Subject::Org(7), "--org", 4),
    ] {
        let (key, id) = subject.report_key();
        let path = dir.path().join(format!("{key}{id}.csv"));
        support::stdout_of_success(
            db.binary()
                .args(["--export-csv", "--from", "2026-10-01", "--to", "2026-11-30"])
                .args([flag, &id.to_string(), "--output"])
                .arg(&path),
        );
        let file = std::fs::read_to_string(&path).unwrap();
        assert_eq!(file.lines().count(), lines, "{file}");
        let belongs = |line: &str| match subject {
            Subject::User(id) => line.starts_with(&format!("{id},")),
            Subject::Org(id) => line.ends_with(&format!(",{id}")),
        };
        assert!(file.lines().skip(1).all(belongs), "{file}");
    }
}
