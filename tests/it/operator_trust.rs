//! What an operator can get wrong, through the real binary: an instant in the future given
//! to a job that closes, expires or deletes by time; a password in a key=value connection
//! string; an SMTP server quoting addresses in its replies. None of it rewrites the books or
//! reaches any output.

use chrono::{Duration, SecondsFormat, Utc};

use crate::support::{self, Out, TestDb};

/// An instant `minutes` from now, as `--at` takes it.
fn from_now(minutes: i64) -> String {
    (Utc::now() + Duration::minutes(minutes)).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The binary on `url`, run to completion with `args`.
fn run_on(url: &str, args: &[&str]) -> Out {
    let mut command = support::binary();
    command.env("USAGE_WORKER__DATABASE__URL", url).args(args);
    support::output(command)
}

/// User 1 in UTC with today's daily period open and a pending alert on it.
fn seed_open_day(db: &TestDb) {
    db.execute(
        "INSERT INTO users (id, email, timezone) VALUES (1, 'ada@example.com', 'UTC');
         INSERT INTO usage_periods (user_id, period, period_start, period_end)
              VALUES (1, 'day', date_trunc('day', now()), date_trunc('day', now()) + interval '1 day');",
    );
}

fn open_days(db: &TestDb) -> i64 {
    db.count("SELECT count(*) AS n FROM usage_periods WHERE period = 'day' AND status = 'open'")
}

#[test]
fn a_future_at_on_a_job_that_closes_expires_or_deletes_is_refused_naming_allow_future() {
    let db = TestDb::new();
    seed_open_day(&db);
    let next_week = from_now(7 * 24 * 60);
    for jobs in [
        "reset-daily",
        "reset-monthly",
        "alerts",
        "retention",
        "all",
        "aggregate,retention",
    ] {
        let out = run_on(&db.url, &["--run", jobs, "--at", &next_week]);
        assert_eq!(out.code, 2, "--run {jobs}: {}{}", out.stdout, out.stderr);
        assert!(
            out.stderr.contains("--allow-future") && out.stderr.contains(&next_week),
            "--run {jobs}: {}",
            out.stderr
        );
    }
    assert_eq!(db.count("SELECT count(*) AS n FROM job_runs"), 0);
    assert_eq!(open_days(&db), 1);

    // Today's period was left alone, so the manual reset an operator wanted still works.
    let out = run_on(&db.url, &["--run", "reset-daily", "--user", "1"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        db.count(
            "SELECT count(*) AS n FROM usage_periods
              WHERE period = 'day' AND status = 'closed' AND close_reason = 'manual'"
        ),
        1
    );
}

#[test]
fn a_future_at_is_accepted_with_dry_run_or_allow_future_within_clock_skew_and_on_jobs_that_only_add()
 {
    let db = TestDb::new();
    seed_open_day(&db);
    let next_week = from_now(7 * 24 * 60);

    let out = run_on(
        &db.url,
        &["--run", "reset-daily", "--at", &next_week, "--dry-run"],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let out = run_on(&db.url, &["--run", "reset-daily", "--at", &from_now(2)]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let out = run_on(
        &db.url,
        &["--run", "aggregate,partitions,stats", "--at", &next_week],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(open_days(&db), 1);

    let out = run_on(
        &db.url,
        &["--run", "reset-daily", "--at", &next_week, "--allow-future"],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        db.count(
            "SELECT count(*) AS n FROM usage_periods
              WHERE period = 'day' AND status = 'closed' AND close_reason = 'rollover'"
        ),
        1
    );
}
