//! reset-daily / reset-monthly and quota_status against a real database: rollover with
//! reconciliation, manual resets, downtime, drift repair, and what applications read.

use bigdecimal::BigDecimal;
use chrono::Utc;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Timestamptz};
use usage_worker::jobs::{JobKind, JobReport, RunOpts};
use usage_worker::quota_report::QuotaRow;

use crate::support::quota::{
    PeriodRow, add_new_events_to_periods, month_tokens, periods, raw_sums,
};
use crate::support::{self, TestDb, at};

fn reset(db: &TestDb, kind: JobKind, now: &str, user: Option<i64>) -> JobReport {
    let opts = RunOpts {
        user_id: user,
        ..RunOpts::default()
    };
    db.run_job(kind, now, &opts).unwrap()
}

fn event(db: &TestDb, user: i64, kind: &str, tokens: i64, created_at: &str) {
    db.execute(&format!(
        "INSERT INTO usage_events (user_id, kind, tokens, cost, created_at)
         VALUES ({user}, '{kind}', {tokens}, {tokens} * 0.001, '{created_at}')"
    ));
}

/// Every period of the user tiles with the next and holds exactly the raw events of its range.
fn assert_tiled_and_exact(db: &TestDb, rows: &[PeriodRow]) {
    let mut conn = db.conn();
    for pair in rows.windows(2) {
        assert_eq!(
            pair[0].period_end, pair[1].period_start,
            "gap or overlap: {pair:?}"
        );
    }
    for row in rows {
        let (requests, tokens) = raw_sums(&mut conn, row.user_id, row.period_start, row.period_end);
        assert_eq!(
            (row.requests, row.tokens),
            (requests, tokens),
            "totals of {row:?}"
        );
    }
}

#[test]
fn manual_reset_mid_day_then_rollover_gives_three_periods_without_gap_or_overlap_and_exact_totals()
{
    let db = TestDb::new();
    db.add_user(42, "UTC");
    event(&db, 42, "ai_response", 10, "2027-01-10T08:00:00Z");
    event(&db, 42, "ai_response", 20, "2027-01-10T12:00:00Z");
    add_new_events_to_periods(&mut db.conn());

    // Through the binary, as an operator would, so the run ledger records it.
    support::stdout_of_success(db.binary().args([
        "--run",
        "reset-daily",
        "--user",
        "42",
        "--at",
        "2027-01-10T13:00:00Z",
        "--allow-future",
    ]));
    assert_eq!(
        db.count("SELECT count(*) AS n FROM job_runs WHERE job = 'reset-daily' AND trigger = 'manual' AND user_id = 42 AND status = 'succeeded'"),
        1
    );
    // The same reset again changes nothing.
    reset(&db, JobKind::ResetDaily, "2027-01-10T13:00:00Z", Some(42));

    event(&db, 42, "ai_response", 40, "2027-01-10T14:00:00Z");
    event(&db, 42, "ai_response", 80, "2027-01-10T20:00:00Z");
    // Arrives late: belongs to the period closed by the manual reset.
    event(&db, 42, "ai_response", 1, "2027-01-10T12:30:00Z");
    add_new_events_to_periods(&mut db.conn());
    let report = reset(&db, JobKind::ResetDaily, "2027-01-11T00:15:00Z", None);
    assert_eq!(report.details["closed"], 1);
    event(&db, 42, "ai_response", 5, "2027-01-11T01:00:00Z");
    add_new_events_to_periods(&mut db.conn());

    let days = periods(&mut db.conn(), 42, "day");
    let shape: Vec<_> = days
        .iter()
        .map(|p| {
            (
                p.period_start,
                p.period_end,
                p.status.as_str(),
                p.close_reason.as_deref(),
                p.tokens,
            )
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            (
                at("2027-01-10T00:00:00Z"),
                at("2027-01-10T13:00:00Z"),
                "closed",
                Some("manual"),
                31
            ),
            (
                at("2027-01-10T13:00:00Z"),
                at("2027-01-11T00:00:00Z"),
                "closed",
                Some("rollover"),
                120
            ),
            (
                at("2027-01-11T00:00:00Z"),
                at("2027-01-12T00:00:00Z"),
                "open",
                None,
                5
            ),
        ]
    );
    assert_tiled_and_exact(&db, &days);
}

#[test]
fn manual_reset_moves_events_counted_after_the_reset_instant_into_the_new_period() {
    let db = TestDb::new();
    db.add_user(7, "Europe/Berlin");
    event(&db, 7, "ai_response", 10, "2027-01-10T08:00:00Z");
    event(&db, 7, "image_generation", 20, "2027-01-10T15:00:00Z");
    add_new_events_to_periods(&mut db.conn());
    let report = reset(&db, JobKind::ResetMonthly, "2027-01-10T12:00:00Z", Some(7));
    assert_eq!(report.details["reset"], true);

    let months = periods(&mut db.conn(), 7, "month");
    assert_eq!(months.len(), 2);
    assert_eq!(
        (months[0].period_start, months[0].period_end),
        (at("2026-12-31T23:00:00Z"), at("2027-01-10T12:00:00Z"))
    );
    assert_eq!(
        (months[1].period_end, months[1].tokens),
        (at("2027-01-31T23:00:00Z"), 20)
    );
    assert_tiled_and_exact(&db, &months);
    assert_eq!(
        db.count("SELECT count(*) AS n FROM usage_period_kind_totals WHERE user_id = 7 AND period = 'month' AND kind = 'image_generation' AND period_start = '2027-01-10T12:00:00Z' AND tokens = 20"),
        1
    );
}

#[test]
fn manual_reset_of_an_unknown_user_is_an_error_naming_the_user() {
    let db = TestDb::new();
    let opts = RunOpts {
        user_id: Some(999),
        ..RunOpts::default()
    };
    let err = JobKind::ResetDaily
        .run(&db.ctx(), &mut db.conn(), at("2027-01-10T12:00:00Z"), &opts)
        .unwrap_err();
    assert!(err.to_string().contains("user 999"), "{err}");
}

#[test]
fn after_three_days_of_downtime_each_missed_day_is_closed_with_exact_totals() {
    let db = TestDb::new();
    db.add_user(1, "Europe/Berlin");
    db.add_user(2, "Europe/Berlin"); // inactive throughout
    event(&db, 1, "ai_response", 100, "2027-03-01T08:00:00Z");
    add_new_events_to_periods(&mut db.conn());
    // Down from here: nothing aggregated, nothing reset.
    event(&db, 1, "ai_response", 1, "2027-03-01T22:30:00Z"); // 23:30 in Berlin, still day 1
    event(&db, 1, "message_sent", 0, "2027-03-01T23:30:00Z"); // day 2 in Berlin
    event(&db, 1, "ai_response", 10, "2027-03-02T12:00:00Z");
    event(&db, 1, "ai_response", 1000, "2027-03-03T12:00:00Z");

    // Back at 00:10 Berlin on day 4: the catch-up runs aggregate, then reset-daily.
    add_new_events_to_periods(&mut db.conn());
    let report = reset(&db, JobKind::ResetDaily, "2027-03-03T23:10:00Z", None);
    assert_eq!(report.details["closed"], 3, "{report:?}");

    let days = periods(&mut db.conn(), 1, "day");
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
    assert_tiled_and_exact(&db, &days);
    assert_eq!(
        db.count("SELECT count(*) AS n FROM usage_periods WHERE user_id = 2"),
        0
    );

    let again = reset(&db, JobKind::ResetDaily, "2027-03-03T23:10:00Z", None);
    assert_eq!(again.details["closed"], 0);
    assert_eq!(periods(&mut db.conn(), 1, "day"), days);
}

#[test]
fn reconciliation_repairs_a_tampered_period_total_and_reports_it() {
    let db = TestDb::new();
    db.add_user(5, "UTC");
    event(&db, 5, "ai_response", 300, "2027-01-10T08:00:00Z");
    event(&db, 5, "file_upload", 0, "2027-01-10T09:00:00Z");
    add_new_events_to_periods(&mut db.conn());
    db.execute(
        "UPDATE usage_periods SET tokens = tokens + 999 WHERE user_id = 5 AND period = 'day';
         UPDATE usage_period_kind_totals SET requests = 7 WHERE user_id = 5 AND period = 'day' AND kind = 'file_upload'",
    );

    let report = reset(&db, JobKind::ResetDaily, "2027-01-11T00:00:00Z", None);

    let day = &periods(&mut db.conn(), 5, "day")[0];
    assert_eq!(
        (day.status.as_str(), day.tokens, day.requests),
        ("closed", 300, 2)
    );
    assert_eq!(
        db.count("SELECT requests AS n FROM usage_period_kind_totals WHERE user_id = 5 AND period = 'day' AND kind = 'file_upload'"),
        1
    );
    assert_eq!(report.details["drift"]["periods"], 1);
    assert_eq!(report.details["drift"]["values"], 2);
    let samples = report.details["drift"]["samples"].as_array().unwrap();
    assert!(
        samples.iter().any(|s| s["user_id"] == 5
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
    let monthly = reset(&db, JobKind::ResetMonthly, "2027-02-01T00:00:00Z", None);
    assert_eq!(monthly.details["drift"]["values"], 0);
}

#[test]
fn a_user_with_an_unknown_time_zone_is_reset_in_utc_and_reported_while_the_others_go_on() {
    let db = TestDb::new();
    db.add_user(1, "Europe/Berlin");
    db.add_user(3, "Mars/Olympus_Mons");
    event(&db, 1, "ai_response", 1, "2027-01-10T08:00:00Z");
    event(&db, 3, "ai_response", 1, "2027-01-10T08:00:00Z");
    add_new_events_to_periods(&mut db.conn());
    let report = reset(&db, JobKind::ResetDaily, "2027-01-11T00:00:00Z", None);
    assert_eq!(report.details["closed"], 2);
    assert_eq!(
        report.details["unknown_timezone_users"],
        serde_json::json!([3])
    );
    assert_eq!(
        periods(&mut db.conn(), 3, "day")[0].period_end,
        at("2027-01-11T00:00:00Z")
    );
}

#[test]
fn a_dry_run_reports_the_periods_it_would_close_and_changes_nothing() {
    let db = TestDb::new();
    db.add_user(1, "UTC");
    event(&db, 1, "ai_response", 1, "2027-01-10T08:00:00Z");
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

/// `quota_status()` as `--usage` reads it (the display offset, unused here, as 0).
fn quota_status(db: &TestDb, user_id: i64, instant: &str) -> Vec<QuotaRow> {
    diesel::sql_query("SELECT q.*, 0 AS period_end_utc_offset FROM quota_status($1, $2) q")
        .bind::<BigInt, _>(user_id)
        .bind::<Timestamptz, _>(at(instant))
        .load(&mut db.conn())
        .unwrap()
}

fn find<'a>(rows: &'a [QuotaRow], metric: &str, period: &str, kind: &str) -> &'a QuotaRow {
    rows.iter()
        .find(|r| r.metric == metric && r.period == period && r.kind == kind)
        .unwrap_or_else(|| panic!("no {metric}/{period}/{kind:?} row in {rows:?}"))
}

fn num(n: i64) -> BigDecimal {
    BigDecimal::from(n)
}

fn used_limit_remaining(row: &QuotaRow) -> (BigDecimal, Option<BigDecimal>, Option<BigDecimal>) {
    (
        row.used.clone(),
        row.limit_value.clone(),
        row.remaining.clone(),
    )
}

#[test]
fn quota_status_of_a_user_without_events_shows_zero_usage_and_the_periods_in_the_users_zone() {
    let db = TestDb::new();
    db.add_user(9, "America/New_York");
    let rows = quota_status(&db, 9, "2026-11-23T03:00:00Z"); // 22:00 on Nov 22 in New York
    assert_eq!(rows.len(), 10); // five metrics, day and month, over all kinds
    for row in &rows {
        assert_eq!(row.used, num(0));
        assert!(
            row.unlimited && !row.exceeded && row.limit_value.is_none() && row.remaining.is_none()
        );
    }
    let day = find(&rows, "tokens", "day", "");
    assert_eq!(
        (day.period_start, day.period_end),
        (at("2026-11-22T05:00:00Z"), at("2026-11-23T05:00:00Z"))
    );
    let month = find(&rows, "tokens", "month", "");
    assert_eq!(
        (month.period_start, month.period_end),
        (at("2026-11-01T04:00:00Z"), at("2026-12-01T05:00:00Z"))
    );
    assert!(quota_status(&db, 12345, "2026-11-23T03:00:00Z").is_empty());
}

#[test]
fn quota_status_reports_limits_remaining_and_unlimited_metrics_and_follows_a_plan_change_at_once() {
    let db = TestDb::new();
    db.execute(
        "INSERT INTO plans (id, name) VALUES (1, 'free'), (2, 'pro');
         INSERT INTO plan_limits (plan_id, metric, period, kind, max_value)
         VALUES (1, 'tokens', 'month', '', 1000), (2, 'tokens', 'month', '', 100000)",
    );
    db.add_user(1, "UTC");
    db.execute("UPDATE users SET plan_id = 1 WHERE id = 1");
    event(&db, 1, "ai_response", 710, "2026-11-20T10:00:00Z");
    add_new_events_to_periods(&mut db.conn());

    let rows = quota_status(&db, 1, "2026-11-23T12:00:00Z");
    let tokens = find(&rows, "tokens", "month", "");
    assert_eq!(
        used_limit_remaining(tokens),
        (num(710), Some(num(1000)), Some(num(290)))
    );
    assert!(!tokens.unlimited && !tokens.exceeded);
    assert_eq!(tokens.percent, Some("71.00".parse().unwrap()));
    let messages = find(&rows, "messages", "month", "");
    assert!(messages.unlimited && messages.percent.is_none());
    // Today has no events: the daily row is zero, the monthly one counts the 20th.
    assert_eq!(find(&rows, "tokens", "day", "").used, num(0));

    db.execute("UPDATE users SET plan_id = 2 WHERE id = 1");
    let rows = quota_status(&db, 1, "2026-11-23T12:00:00Z");
    assert_eq!(
        find(&rows, "tokens", "month", "").remaining,
        Some(num(99290))
    );
}

#[test]
fn quota_status_checks_a_kind_scoped_limit_against_that_kind_only() {
    let db = TestDb::new();
    db.execute(
        "INSERT INTO plans (id, name) VALUES (1, 'free');
         INSERT INTO plan_limits (plan_id, metric, period, kind, max_value)
         VALUES (1, 'requests', 'day', 'image_generation', 2)",
    );
    db.add_user(1, "Asia/Kolkata");
    db.execute("UPDATE users SET plan_id = 1 WHERE id = 1");
    for _ in 0..3 {
        event(&db, 1, "image_generation", 0, "2026-11-23T05:00:00Z");
    }
    for _ in 0..5 {
        event(&db, 1, "ai_response", 10, "2026-11-23T05:00:00Z");
    }
    add_new_events_to_periods(&mut db.conn());

    let rows = quota_status(&db, 1, "2026-11-23T06:00:00Z");
    assert_eq!(rows.len(), 11);
    let images = find(&rows, "requests", "day", "image_generation");
    assert_eq!(
        used_limit_remaining(images),
        (num(3), Some(num(2)), Some(num(0)))
    );
    assert!(images.exceeded);
    assert_eq!(images.percent, Some("150.00".parse().unwrap()));
    assert_eq!(
        (images.period_start, images.period_end),
        (at("2026-11-22T18:30:00Z"), at("2026-11-23T18:30:00Z"))
    );
    let all = find(&rows, "requests", "day", "");
    assert_eq!(all.used, num(8));
    assert!(all.unlimited && !all.exceeded);
}

#[test]
fn usage_flag_shows_a_bar_per_limit_with_the_reset_instant_in_the_users_zone_and_json_for_scripts()
{
    use chrono::{Datelike, Months, NaiveDate, TimeZone};
    let db = TestDb::new();
    db.execute(
        "INSERT INTO plans (id, name) VALUES (1, 'free');
         INSERT INTO plan_limits (plan_id, metric, period, kind, max_value) VALUES (1, 'tokens', 'month', '', 100000);
         INSERT INTO users (id, email, timezone, plan_id) VALUES (42, 'u42@example.com', 'Europe/Berlin', 1);
         INSERT INTO usage_events (user_id, kind, tokens) VALUES (42, 'ai_response', 71234);",
    );
    add_new_events_to_periods(&mut db.conn());
    let berlin: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
    let today = Utc::now().with_timezone(&berlin).date_naive();
    let next_month =
        NaiveDate::from_ymd_opt(today.year(), today.month(), 1).unwrap() + Months::new(1);
    let resets = berlin
        .from_local_datetime(&next_month.and_hms_opt(0, 0, 0).unwrap())
        .unwrap();

    let run = |args: &[&str]| support::stdout_of_success(db.binary().args(args));
    let table = run(&["--usage", "42"]);
    let line = table
        .lines()
        .find(|l| l.starts_with("tokens/month"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        line.contains("██████████████░░░░░░") && line.contains("71%"),
        "{line}"
    );
    assert!(line.contains("71,234 / 100,000"), "{line}");
    assert!(
        line.contains(&format!(
            "resets {} Europe/Berlin",
            resets.format("%Y-%m-%d 00:00")
        )),
        "{line}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("messages/day") && l.contains("unlimited")),
        "{table}"
    );

    let json: serde_json::Value = serde_json::from_str(&run(&["--usage", "42", "--json"])).unwrap();
    let tokens = month_tokens(&json);
    assert_eq!(tokens["used"], 71234);
    assert_eq!(tokens["limit_value"], 100000);
    assert_eq!(tokens["remaining"], 28766);
    assert_eq!(tokens["resets_local"], resets.to_rfc3339());

    let missing = support::output_of(db.binary().args(["--usage", "7"]));
    assert_eq!(missing.code, 2);
    assert!(missing.stderr.contains("user 7"));
}
