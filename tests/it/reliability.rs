//! The whole daemon, as built and run by an operator, against hostile input, a least-privilege
//! database role, an SMTP outage and a second daemon. Every test starts the real binary; every
//! log it writes is searched for email addresses and passwords.

use std::process::Command;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use usage_worker::config::Settings;
use usage_worker::jobs::JobKind;

use crate::support::daemon::Daemon;
use crate::support::roles::{self, RolesDb, owned_by};
use crate::support::smtp::SmtpServer;
use crate::support::{self, Out, TestDb, schedule_key, text};

/// A password placed in every database URL: the test cluster trusts local sockets, so it is
/// never checked, but it must never be written anywhere.
const DB_PASSWORD: &str = "db-pw-Zq7xK2";
const SMTP_PASSWORD: &str = "smtp-pw-Vb3nM8";

/// The database URL of `db` with [`DB_PASSWORD`] in it.
fn url_with_password(db: &TestDb) -> String {
    db.url
        .replacen("postgres@", &format!("postgres:{DB_PASSWORD}@"), 1)
}

/// Runs the binary to completion and checks its logs for secrets before returning.
fn run(command: Command) -> Out {
    let out = support::output(command);
    assert_no_secrets_in_logs(&out.stderr);
    out
}

/// Every address this suite puts into a database; none may reach a log in full.
const ADDRESSES: &[&str] = &[
    "ada@example.com",
    "eve@example.com",
    "nat@example.com",
    "victim@example.org",
    "not-an-address",
];

/// Fails naming the line if a log line holds one of [`ADDRESSES`], the SMTP password or the
/// database password. A masked address (`a***@example.com`) is fine.
fn assert_no_secrets_in_logs(logs: &str) {
    for line in logs.lines() {
        assert!(
            !line.contains(DB_PASSWORD),
            "database password logged: {line}"
        );
        assert!(
            !line.contains(SMTP_PASSWORD),
            "SMTP password logged: {line}"
        );
        for address in ADDRESSES {
            assert!(
                !line.contains(address),
                "email address {address} logged: {line}"
            );
        }
    }
}

#[test]
#[should_panic(expected = "email address ada@example.com logged")]
fn the_log_scanner_fails_on_a_full_address_and_accepts_a_masked_one() {
    assert_no_secrets_in_logs("INFO quota alert sent mail.to=a***@example.com");
    assert_no_secrets_in_logs("INFO quota alert sent mail.to=ada@example.com");
}

/// The binary with its database URL (with a password) and every job's schedule off.
fn binary_for(url: &str) -> Command {
    let mut command = support::binary();
    command.env("USAGE_WORKER__DATABASE__URL", url);
    for kind in JobKind::ALL {
        command.env(schedule_key(*kind), "");
    }
    command
}

// ---------------------------------------------------------------------------------------------
// Hostile and broken input
// ---------------------------------------------------------------------------------------------

/// The binary run with `args` exits 2 with every one of `named` in its stderr.
fn assert_usage_error(args: &[&str], named: &[&str]) {
    let mut command = support::binary();
    command.args(args);
    let out = run(command);
    assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
    assert!(
        named.iter().all(|n| out.stderr.contains(n)),
        "{args:?}: {named:?} not all named in:\n{}",
        out.stderr
    );
}

#[test]
fn an_unparseable_at_is_a_usage_error_naming_the_value_and_the_form() {
    assert_usage_error(
        &["--run", "partitions", "--at", "tomorrow"],
        &["tomorrow", "RFC 3339"],
    );
}

#[test]
fn an_unknown_job_in_run_is_a_usage_error_naming_it_and_the_valid_jobs() {
    assert_usage_error(&["--run", "partitions,agregate"], &["agregate", "alerts"]);
}

/// A wrong value in a few sections: `--check-config` exits 78 naming the key.
#[test]
fn a_wrong_value_exits_78_naming_the_key() {
    // Every key's validation is unit-tested in-process (src/config/tests.rs); these few show
    // that the binary maps a refused value to exit 78 with the key, whatever the section.
    let cases: &[(&str, &str, &str)] = &[
        ("DATABASE__POOL_SIZE", "0", "database.pool_size"),
        ("MAIL__SMTP__TLS", "maybe", "mail.smtp.tls"),
        ("ALERTS__THRESHOLDS", "[80, 180]", "alerts.thresholds"),
    ];
    let mut failures = Vec::new();
    for (key, value, named) in cases {
        let out = run({
            let mut c = binary_for(&format!("postgres://worker:{DB_PASSWORD}@127.0.0.1/app"));
            c.arg("--check-config")
                .env(format!("USAGE_WORKER__{key}"), value);
            c
        });
        if out.code != 78 || !out.stderr.contains(named) {
            failures.push(format!(
                "{key}={value}: exit {}, expected 78 naming {named}: {}",
                out.code,
                out.stderr.trim()
            ));
        }
        assert!(!out.stdout.contains(DB_PASSWORD));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_smtp_password_never_appears_in_check_config_output_or_debug_output() {
    let out = run({
        let mut c = binary_for("postgres://worker@127.0.0.1/app");
        c.arg("--check-config")
            .env("USAGE_WORKER__MAIL__TRANSPORT", "smtp")
            .env("USAGE_WORKER__MAIL__SMTP__USERNAME", "mailer")
            .env("USAGE_WORKER__MAIL__SMTP__PASSWORD", SMTP_PASSWORD)
            .env("USAGE_WORKER__DATABASE__PASSWORD", DB_PASSWORD);
        c
    });
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stdout.contains(SMTP_PASSWORD), "{}", out.stdout);
    assert!(!out.stdout.contains(DB_PASSWORD), "{}", out.stdout);
    assert!(out.stdout.contains("mailer"), "{}", out.stdout);

    let mut settings = Settings::default();
    settings.mail.smtp.password = Some(SMTP_PASSWORD.to_string().into());
    settings.database.password = Some(DB_PASSWORD.to_string().into());
    settings.database.url = format!("postgres://worker:{DB_PASSWORD}@db/app");
    for text in [format!("{settings:?}"), format!("{settings:#?}")] {
        assert!(!text.contains(SMTP_PASSWORD), "{text}");
        assert!(!text.contains(DB_PASSWORD), "{text}");
    }
}

/// Three users on a 1,000-token monthly plan, each 900 tokens into the month period
/// `start`..`end`: Ada, a user with an unusable address, and Eve, whose name tries to add a
/// header and markup.
fn seed_hostile_users(db: &TestDb, start: &str, end: &str) {
    db.execute(&format!(
        "INSERT INTO plans (id, name) VALUES (1, 'free');
         INSERT INTO plan_limits (plan_id, metric, period, kind, max_value)
              VALUES (1, 'tokens', 'month', '', 1000);
         INSERT INTO users (id, email, name, timezone, plan_id) VALUES
             (1, 'ada@example.com', 'Ada', 'Europe/Berlin', 1),
             (2, 'not-an-address', 'Nat', 'UTC', 1),
             (3, 'eve@example.com', E'Eve\\r\\nBcc: victim@example.org\\r\\n<script>alert(1)</script>', 'UTC', 1);
         INSERT INTO usage_periods (user_id, period, period_start, period_end, tokens)
              SELECT id, 'month', '{start}', '{end}', 900 FROM users;"
    ));
}

#[test]
fn an_unusable_address_fails_that_alert_only_and_a_hostile_name_cannot_add_headers_or_markup() {
    let db = TestDb::new();
    seed_hostile_users(&db, "2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z");
    let server = SmtpServer::start();

    let out = run({
        let mut c = binary_for(&url_with_password(&db));
        server.configure_env(&mut c);
        c.args(["--run", "alerts", "--at", "2026-11-10T12:00:00Z"]);
        c
    });
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);

    assert_eq!(
        db.count(
            "SELECT count(*) AS n FROM quota_alerts
              WHERE user_id = 2 AND status = 'failed' AND error_class = 'invalid_address'"
        ),
        1
    );
    assert_eq!(
        db.count(
            "SELECT count(*) AS n FROM quota_alerts WHERE user_id IN (1, 3) AND status = 'sent'"
        ),
        2
    );
    let received = server.received();
    let mut recipients: Vec<String> = received.iter().flat_map(|m| m.rcpt.clone()).collect();
    recipients.sort();
    assert_eq!(recipients, ["ada@example.com", "eve@example.com"]);
    let eve = received
        .iter()
        .find(|m| m.rcpt == ["eve@example.com"])
        .unwrap();
    let head = eve.data.split("\r\n\r\n").next().unwrap();
    assert!(
        !head
            .split("\r\n")
            .any(|l| l.to_ascii_lowercase().starts_with("bcc:")),
        "{head}"
    );
    // The HTML part shows the markup as text; the plain-text part may carry it verbatim.
    let html = eve
        .data
        .split("Content-Type: text/html")
        .nth(1)
        .expect("an HTML part");
    assert!(!html.contains("<script>"), "{html}");
    assert!(html.contains("&lt;script&gt;"), "{html}");
    // The run reports the failed alert by user, without the address.
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("invalid"), "{all}");
}

// ---------------------------------------------------------------------------------------------
// Daemons
// ---------------------------------------------------------------------------------------------

/// Stops `daemon` (SIGTERM) and returns its logs after checking its exit code and the logs
/// for secrets.
fn stop(daemon: Daemon) -> String {
    let (code, logs) = daemon.stop();
    assert_eq!(code, 0, "daemon exit status; logs:\n{logs}");
    assert_no_secrets_in_logs(&logs);
    logs
}

#[test]
fn with_smtp_down_for_several_alert_runs_every_alert_is_delivered_once_after_recovery() {
    let db = TestDb::new();
    // The daemon runs at the real clock: the period is the one open now.
    let (start, end) = support::clock::month_around_now(&db);
    seed_hostile_users(&db, &start, &end);
    db.execute("UPDATE users SET email = 'nat@example.com', name = 'Nat' WHERE id <> 1");
    let mut server = SmtpServer::start();
    server.stop();

    let mut command = binary_for(&url_with_password(&db));
    server.configure_env(&mut command);
    command
        .env(schedule_key(JobKind::Alerts), "* * * * * *")
        .env("USAGE_WORKER__ALERTS__BACKOFF_BASE", "1s")
        .env("USAGE_WORKER__ALERTS__BACKOFF_MAX", "1s")
        .env("USAGE_WORKER__ALERTS__MAX_ATTEMPTS", "100")
        .env("USAGE_WORKER__MAIL__SMTP__TIMEOUT", "2s");
    let daemon = Daemon::start(command);

    let attempted_thrice =
        "SELECT count(*) AS n FROM quota_alerts WHERE attempts >= 3 AND status = 'pending'";
    assert_eq!(
        db.wait_for_count(attempted_thrice, 3, Duration::from_secs(60)),
        3,
        "three alerts retried through at least three runs while SMTP was down"
    );
    assert!(
        db.count(
            "SELECT count(*) AS n FROM job_runs WHERE job = 'alerts' AND status = 'succeeded'"
        ) >= 3
    );
    server.restart();
    let sent = "SELECT count(*) AS n FROM quota_alerts WHERE status = 'sent'";
    assert_eq!(db.wait_for_count(sent, 3, Duration::from_secs(60)), 3);
    // A few more runs after delivery must send nothing again.
    let runs = db.count("SELECT count(*) AS n FROM job_runs WHERE job = 'alerts'");
    db.wait_for_count(
        "SELECT count(*) AS n FROM job_runs WHERE job = 'alerts'",
        runs + 3,
        Duration::from_secs(30),
    );
    stop(daemon);

    let mut recipients: Vec<String> = server
        .received()
        .iter()
        .flat_map(|m| m.rcpt.clone())
        .collect();
    recipients.sort();
    assert_eq!(
        recipients,
        ["ada@example.com", "nat@example.com", "nat@example.com"]
    );
}

// ---------------------------------------------------------------------------------------------
// Least privilege
// ---------------------------------------------------------------------------------------------

/// The roles of deploy/roles.sql (docs/OPERATIONS.md §2–3) in a fresh empty database:
/// migrations as the owner, then every job once as the daemon's role, which owns nothing.
#[test]
fn the_daemon_runs_every_job_under_the_least_privilege_role_of_the_runbook() {
    let roles = RolesDb::new("lp", "usage");
    roles.migrate_as_owner();
    roles
        .admin()
        .batch_execute(
            "INSERT INTO usage.plans (id, name) VALUES (1, 'free');
             INSERT INTO usage.plan_limits (plan_id, metric, period, kind, max_value)
                  VALUES (1, 'tokens', 'month', '', 1000);
             INSERT INTO usage.users (id, email, name, timezone, plan_id)
                  VALUES (1, 'ada@example.com', 'Ada', 'UTC', 1);",
        )
        .unwrap();

    let all = roles.run_as_worker(&["--run", "all", "--at", "2026-11-10T12:00:00Z"]);
    assert_no_secrets_in_logs(&all.stderr);
    assert!(!all.stderr.contains(roles::PASSWORD) && !all.stdout.contains(roles::PASSWORD));
    assert_eq!(all.code, 0, "{}\n{}", all.stdout, all.stderr);

    let mut check = roles.admin();
    assert_eq!(
        support::count(&mut check, &owned_by(&roles.worker)).unwrap(),
        0,
        "the worker role owns something"
    );
    let succeeded = "SELECT count(*) AS n FROM usage.job_runs WHERE status = 'succeeded'";
    assert_eq!(
        support::count(&mut check, succeeded).unwrap() as usize,
        JobKind::ALL.len(),
        "{}",
        all.stdout
    );
}

// ---------------------------------------------------------------------------------------------
// Two daemons
// ---------------------------------------------------------------------------------------------

/// Each tick (every second from a job's first recorded tick to its last) that does not have
/// exactly one successful cron or catch-up run, with what the ledger holds for it. A tick may
/// have none only while a run of an earlier tick was still going: that run finished after the
/// tick, less 200 ms for the lock being released just after the run's row is finished.
const TICKS_NOT_RUN_EXACTLY_ONCE: &str = "
    WITH span AS (
        SELECT job, min(scheduled_for) AS first, max(scheduled_for) AS last
          FROM job_runs WHERE trigger IN ('cron', 'catchup') GROUP BY job
    ), ticks AS (
        SELECT job, generate_series(first, last, interval '1 second') AS tick FROM span
    ), judged AS (
        SELECT t.job, t.tick,
               (SELECT count(*) FROM job_runs r
                 WHERE r.job = t.job AND r.scheduled_for = t.tick
                   AND r.trigger IN ('cron', 'catchup') AND r.status = 'succeeded') AS succeeded,
               EXISTS (SELECT 1 FROM job_runs r
                        WHERE r.job = t.job AND r.scheduled_for < t.tick
                          AND r.status IN ('succeeded', 'failed')
                          AND r.finished_at > t.tick - interval '200 milliseconds') AS overlapped,
               (SELECT string_agg(r.status || coalesce(' (' || r.error || ')', ''), ', ')
                  FROM job_runs r WHERE r.job = t.job AND r.scheduled_for = t.tick) AS ledger
          FROM ticks t
    )
    SELECT string_agg(job || ' ' || tick || ': ' || succeeded || ' succeeded; '
                      || coalesce(ledger, 'no row'), E'\\n' ORDER BY job, tick) AS t
      FROM judged
     WHERE succeeded > 1 OR (succeeded = 0 AND NOT overlapped)";

/// Two daemons on one database, every job every second, events arriving all along for three
/// users on a 1,000-token plan until each is past 95 %.
fn two_daemons_every_job_every_second(seconds: u64) {
    let db = TestDb::new();
    db.execute(
        "INSERT INTO plans (id, name) VALUES (1, 'free');
         INSERT INTO plan_limits (plan_id, metric, period, kind, max_value)
              VALUES (1, 'tokens', 'month', '', 1000);
         INSERT INTO users (id, email, name, timezone, plan_id) VALUES
             (1, 'ada@example.com', 'Ada', 'UTC', 1),
             (2, 'eve@example.com', 'Eve', 'Europe/Berlin', 1),
             (3, 'nat@example.com', 'Nat', 'America/New_York', 1);",
    );
    let server = SmtpServer::start();
    let daemon = || {
        let mut command = binary_for(&url_with_password(&db));
        server.configure_env(&mut command);
        for kind in JobKind::ALL {
            command.env(schedule_key(*kind), "* * * * * *");
        }
        command
            .env("USAGE_WORKER__ALERTS__BACKOFF_BASE", "1s")
            .env("USAGE_WORKER__ALERTS__BACKOFF_MAX", "1s")
            .env("USAGE_WORKER__DATABASE__POOL_SIZE", "3");
        Daemon::start(command)
    };
    let first = daemon();
    let second = daemon();

    // Events: every user gets `step` tokens ten times a second, 1,100 tokens in all.
    let ticks = seconds * 10;
    let step = 1100 / ticks as i64 + 1;
    let mut writer = db.conn();
    for _ in 0..ticks {
        writer
            .batch_execute(&format!(
                "INSERT INTO usage_events (user_id, kind, tokens)
                 SELECT u, 'ai_response', {step} FROM generate_series(1, 3) AS u"
            ))
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(writer);
    // Every user's 95 % alert is sent (the 80 % one too, unless both were crossed at once).
    let sent95 = "SELECT count(*) AS n FROM quota_alerts WHERE threshold = 95 AND status = 'sent'";
    assert_eq!(db.wait_for_count(sent95, 3, Duration::from_secs(90)), 3);
    let logs = [stop(first), stop(second)];

    let wrong = text(&mut db.conn(), TICKS_NOT_RUN_EXACTLY_ONCE);
    assert!(
        wrong.is_empty(),
        "ticks without exactly one successful run:\n{wrong}"
    );
    let bad = text(
        &mut db.conn(),
        "SELECT string_agg(job || ' ' || status || ': ' || coalesce(error, ''), E'\\n') AS t
           FROM job_runs WHERE status IN ('failed', 'running', 'abandoned')",
    );
    assert!(bad.is_empty(), "runs that did not succeed:\n{bad}");
    drop(logs);
    for kind in JobKind::ALL {
        let runs = db.count(&format!(
            "SELECT count(*) AS n FROM job_runs WHERE job = '{}' AND status = 'succeeded'",
            kind.name()
        ));
        let span = db.count(&format!(
            "SELECT coalesce(extract(epoch FROM max(scheduled_for) - min(scheduled_for))::bigint + 1, 0) AS n
               FROM job_runs WHERE job = '{}'",
            kind.name()
        ));
        eprintln!("{}: {runs} runs over {span} ticks", kind.name());
        assert!(runs >= 3, "{} ran only {runs} times", kind.name());
    }
    let sent = db.count("SELECT count(*) AS n FROM quota_alerts WHERE status = 'sent'");
    let received = server.received();
    let mut ids: Vec<String> = received.iter().map(|m| m.message_id()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), received.len(), "an alert was emailed twice");
    assert_eq!(received.len() as i64, sent, "emails and sent alerts differ");
}

#[test]
fn two_daemons_with_every_job_every_second_run_each_tick_once_and_email_each_alert_once() {
    two_daemons_every_job_every_second(8);
}

/// The length; run with
/// `cargo test --test it -- --ignored --nocapture reliability::`.
#[test]
#[ignore]
fn two_daemons_for_thirty_seconds_run_each_tick_once_and_email_each_alert_once() {
    two_daemons_every_job_every_second(30);
}
