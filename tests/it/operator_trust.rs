//! What an operator can get wrong, through the real binary: an instant in the future given
//! to a job that closes, expires or deletes by time; a password in a key=value connection
//! string; an SMTP server quoting addresses in its replies. None of it rewrites the books or
//! reaches any output.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use chrono::{Duration, SecondsFormat, Utc};

use crate::support::daemon::Daemon;
use crate::support::notify::NotifySocket;
use crate::support::smtp::SmtpServer;
use crate::support::{self, Out, TestDb, config_file};

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

/// User 1 with today's daily period open, in a zone where it is about noon now: the period
/// stays open for hours, whenever the test runs.
fn seed_open_day(db: &TestDb) {
    let zone = support::clock::zone_at_local_noon(db);
    db.execute(&format!(
        "INSERT INTO users (id, email, timezone) VALUES (1, 'ada@example.com', '{zone}');
         INSERT INTO usage_periods (user_id, period, period_start, period_end)
              SELECT 1, 'day', period_start, period_end
                FROM usage_period_bounds('{zone}', NULL, 'day', now());"
    ));
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

const KEY_VALUE_URL: &str = "host=127.0.0.1 port=1 password=hunter2secret dbname=x";
/// The same with spaces around `=` and a quoted password holding a space and a quote.
const QUOTED_KEY_VALUE_URL: &str =
    r"host = 127.0.0.1 port=1 password = 'hunter2 s\'ecret' dbname=x";

fn assert_no_password(output: &str) {
    for part in ["hunter2", "s\\'ecret", "'ecret"] {
        assert!(!output.contains(part), "`{part}` in:\n{output}");
    }
}

fn unreachable_run(url: &str, args: &[&str]) -> Out {
    let mut command = support::binary();
    command
        .env("USAGE_WORKER__DATABASE__URL", url)
        .env("USAGE_WORKER__DATABASE__CONNECT_TIMEOUT", "2s")
        .args(args);
    support::output(command)
}

#[test]
fn an_unreachable_key_value_database_url_exits_75_naming_the_host_without_the_password() {
    for url in [KEY_VALUE_URL, QUOTED_KEY_VALUE_URL] {
        for args in [&["--run", "partitions"][..], &["--status"]] {
            let out = unreachable_run(url, args);
            assert_eq!(out.code, 75, "{args:?}: {}", out.stderr);
            assert!(
                out.stderr.contains("127.0.0.1") && out.stderr.contains("port 1"),
                "{}",
                out.stderr
            );
            assert_no_password(&out.stdout);
            assert_no_password(&out.stderr);
        }
    }
}

#[test]
fn the_daemon_waiting_for_a_key_value_database_url_logs_and_notifies_no_password() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let mut notify = NotifySocket::bind(&socket_path);
    let mut command = support::daemon_command(QUOTED_KEY_VALUE_URL);
    command
        .env("USAGE_WORKER__DATABASE__CONNECT_TIMEOUT", "1s")
        .env("NOTIFY_SOCKET", &socket_path);
    let mut daemon = Daemon::start(command);
    daemon.wait_for_lines("database not ready", 2);
    let messages = notify.wait_for_message("STATUS=waiting for the database", |m| {
        m.contains("STATUS=waiting for the database")
    });
    let (_, logs) = daemon.stop();
    assert_no_password(&logs);
    assert_no_password(&messages.join("\n"));
    assert!(logs.contains("127.0.0.1"), "{logs}");
}

#[test]
fn check_config_shows_a_key_value_database_url_without_its_password() {
    for url in [KEY_VALUE_URL, QUOTED_KEY_VALUE_URL] {
        let mut command = support::binary();
        command.env("DATABASE_URL", url).arg("--check-config");
        let out = support::output(command);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert_no_password(&out.stdout);
        assert_no_password(&out.stderr);
        assert!(
            out.stdout
                .contains("host=127.0.0.1 port=1 password=*** dbname=x"),
            "{}",
            out.stdout
        );
    }
}

/// The test database as a key=value connection string: `host=<socket dir> dbname=<name>`.
fn key_value_url(db: &TestDb) -> String {
    let url = url::Url::parse(&db.url.replacen("postgres@/", "postgres@localhost/", 1)).unwrap();
    let dbname = url.path().trim_start_matches('/');
    let host = url
        .query_pairs()
        .find(|(k, _)| k == "host")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    format!("host='{host}' user=postgres dbname={dbname}")
}

#[test]
fn a_password_from_the_configuration_is_added_to_a_key_value_url_and_to_a_url() {
    let db = TestDb::new();
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("db-password");
    // Every character that needs quoting or percent-encoding in one of the forms.
    std::fs::write(&password_file, "p@ss w'rd\\%&?=#/\n").unwrap();
    std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    for url in [key_value_url(&db), db.url.clone()] {
        let config = config_file(
            dir.path(),
            &format!(
                "[database]\nurl = '''{url}'''\npassword_file = \"{}\"\n",
                password_file.display()
            ),
        );
        let mut command = support::binary();
        command
            .args(["--config", config.to_str().unwrap()])
            .args(["--run", "partitions"]);
        let out = support::output(command);
        assert_eq!(out.code, 0, "{url}: {}{}", out.stdout, out.stderr);
        assert!(!out.stderr.contains("w'rd"), "{}", out.stderr);
    }
    assert_eq!(
        db.count("SELECT count(*) AS n FROM job_runs WHERE status = 'succeeded'"),
        2
    );
}

/// Environment for SMTP delivery to the test server.
fn smtp_command(db: &TestDb, server: &SmtpServer) -> Command {
    let mut command = support::binary();
    command.env("USAGE_WORKER__DATABASE__URL", &db.url);
    server.configure_env(&mut command);
    command
}

#[test]
fn a_rejection_quoting_the_recipient_in_another_case_leaves_no_full_address_anywhere() {
    let db = TestDb::new();
    db.execute(
        "INSERT INTO plans (id, name) VALUES (1, 'free');
         INSERT INTO plan_limits (plan_id, metric, period, kind, max_value)
              VALUES (1, 'tokens', 'month', '', 1000);
         INSERT INTO users (id, email, name, timezone, plan_id)
              VALUES (1, 'Bob.Smith@Example.com', 'Bob', 'UTC', 1);
         INSERT INTO usage_periods (user_id, period, period_start, period_end, tokens)
              VALUES (1, 'month', '2026-11-01T00:00:00Z', '2026-12-01T00:00:00Z', 900);",
    );
    let server = SmtpServer::start();
    server.reject("bob.smith@example.com");

    let mut command = smtp_command(&db, &server);
    command.args(["--run", "alerts", "--at", "2026-11-10T12:00:00Z"]);
    let out = support::output(command);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let mut conn = db.conn();
    let last_error = support::text(
        &mut conn,
        "SELECT last_error AS t FROM quota_alerts WHERE user_id = 1 AND status = 'failed'",
    );
    assert!(last_error.contains("550"), "{last_error}");
    let status = support::output({
        let mut c = support::binary();
        c.env("USAGE_WORKER__DATABASE__URL", &db.url)
            .arg("--status");
        c
    });
    for (what, text) in [
        ("stdout", &out.stdout),
        ("log", &out.stderr),
        ("last_error", &last_error),
        ("--status", &status.stdout),
    ] {
        assert!(
            !text.to_lowercase().contains("bob.smith@example.com"),
            "full address in the {what}: {text}"
        );
    }
    assert!(
        last_error.contains("B***@EXAMPLE.COM"),
        "the masked address: {last_error}"
    );
}
