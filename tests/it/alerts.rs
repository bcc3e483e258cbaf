use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Int2, Int4, Nullable, Text};
use usage_worker::config::{MailTransportKind, Settings};
use usage_worker::jobs::{Ctx, JobKind, JobReport, RunOpts};
use usage_worker::mail;

use crate::support::outbox::CrashAfterSend;
use crate::support::smtp::SmtpServer;
use crate::support::{self, TestDb, at};

const NOV: &str = "2026-11-01T00:00:00Z";
const DEC: &str = "2026-12-01T00:00:00Z";
const JAN: &str = "2027-01-01T00:00:00Z";

/// Plans: `free` allows 1,000 tokens a month and 10 image generations a day; `pro` 10,000
/// tokens a month; `enterprise` has no limits. Ada, Bob and Cy are on `free`.
fn seed(db: &TestDb) {
    db.execute(
        "INSERT INTO plans (id, name) VALUES (1, 'free'), (2, 'pro'), (3, 'enterprise');
         INSERT INTO plan_limits (plan_id, metric, period, kind, max_value) VALUES
             (1, 'tokens', 'month', '', 1000),
             (1, 'requests', 'day', 'image_generation', 10),
             (2, 'tokens', 'month', '', 10000);
         INSERT INTO users (id, email, name, timezone, plan_id) VALUES
             (1, 'ada@example.com', 'Ada', 'Europe/Berlin', 1),
             (2, 'bob@example.com', 'Bob', 'UTC', 1),
             (3, 'cy@example.com', 'Cy', 'America/New_York', 1);",
    );
}

/// Sets a user's token total in the open period starting at `start` (one month long).
fn set_tokens(db: &TestDb, user: i64, start: &str, end: &str, tokens: i64) {
    db.execute(&format!(
        "INSERT INTO usage_periods (user_id, period, period_start, period_end, tokens)
         VALUES ({user}, 'month', '{start}', '{end}', {tokens})
         ON CONFLICT (user_id, org_id, period, period_start) DO UPDATE SET tokens = EXCLUDED.tokens"
    ));
}

/// A seeded database and a context that sends through a fresh SMTP server, with `change`
/// applied to the settings.
fn seeded_with_smtp_and(change: impl FnOnce(&mut Settings)) -> (TestDb, SmtpServer, Arc<Ctx>) {
    let db = TestDb::new();
    seed(&db);
    let server = SmtpServer::start();
    let ctx = db.ctx_with(|s| {
        server.configure(&mut s.mail);
        change(s);
    });
    (db, server, ctx)
}

fn seeded_with_smtp() -> (TestDb, SmtpServer, Arc<Ctx>) {
    seeded_with_smtp_and(|_| {})
}

fn run(db: &TestDb, ctx: &Ctx, now: &str) -> JobReport {
    JobKind::Alerts
        .run(ctx, &mut db.conn(), at(now), &RunOpts::default())
        .unwrap()
}

#[derive(QueryableByName, Debug, PartialEq)]
struct Row {
    #[diesel(sql_type = BigInt)]
    user_id: i64,
    #[diesel(sql_type = Int2)]
    threshold: i16,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Int4)]
    attempts: i32,
    #[diesel(sql_type = Nullable<Text>)]
    error_class: Option<String>,
}

fn alerts(db: &TestDb) -> Vec<Row> {
    diesel::sql_query(
        "SELECT user_id, threshold, status, attempts, error_class FROM quota_alerts
          ORDER BY user_id, period_start, threshold",
    )
    .load(&mut db.conn())
    .unwrap()
}

fn statuses(db: &TestDb) -> Vec<(i64, i16, String)> {
    alerts(db)
        .into_iter()
        .map(|r| (r.user_id, r.threshold, r.status))
        .collect()
}

fn subjects(server: &SmtpServer) -> Vec<String> {
    server
        .received()
        .iter()
        .map(|m| m.header("Subject").unwrap_or_default())
        .collect()
}

#[test]
fn crossing_80_then_95_on_separate_runs_sends_two_emails_and_reruns_send_nothing() {
    let (db, server, ctx) = seeded_with_smtp();

    set_tokens(&db, 1, NOV, DEC, 820);
    run(&db, &ctx, "2026-11-10T12:00:00Z");
    run(&db, &ctx, "2026-11-10T12:05:00Z");
    assert_eq!(
        subjects(&server),
        vec!["You have used 80% of your monthly token quota"]
    );

    set_tokens(&db, 1, NOV, DEC, 960);
    run(&db, &ctx, "2026-11-12T08:00:00Z");
    run(&db, &ctx, "2026-11-12T08:05:00Z");
    run(&db, &ctx, "2026-11-20T08:05:00Z");

    let received = server.received();
    assert_eq!(
        subjects(&server),
        vec![
            "You have used 80% of your monthly token quota",
            "You have used 95% of your monthly token quota"
        ]
    );
    assert_eq!(received[0].rcpt, vec!["ada@example.com"]);
    assert_eq!(
        received[1].message_id(),
        "<quota-alert.1.tokens.month.all.20261101T000000Z.95@example.com>"
    );
    assert_eq!(
        statuses(&db),
        vec![(1, 80, "sent".to_string()), (1, 95, "sent".to_string())]
    );
}

#[test]
fn usage_jumping_straight_to_97_percent_sends_only_the_95_alert_and_supersedes_80() {
    let (db, server, ctx) = seeded_with_smtp();

    set_tokens(&db, 2, NOV, DEC, 970);
    let report = run(&db, &ctx, "2026-11-10T12:00:00Z");
    run(&db, &ctx, "2026-11-10T12:05:00Z");

    assert_eq!(
        subjects(&server),
        vec!["You have used 95% of your monthly token quota"]
    );
    assert_eq!(
        statuses(&db),
        vec![
            (2, 80, "superseded".to_string()),
            (2, 95, "sent".to_string())
        ]
    );
    assert_eq!(report.details["decided"]["superseded"], 1);
    let text = &server.received()[0].data;
    assert!(text.contains("970 tokens of 1,000 tokens"), "{text}");
}

#[test]
fn a_new_period_arms_every_threshold_again() {
    let (db, server, ctx) = seeded_with_smtp();

    set_tokens(&db, 2, NOV, DEC, 850);
    run(&db, &ctx, "2026-11-20T00:00:00Z");
    db.execute(&format!(
        "UPDATE usage_periods SET status = 'closed', close_reason = 'rollover', closed_at = '{DEC}'
          WHERE user_id = 2 AND period_start = '{NOV}'"
    ));
    set_tokens(&db, 2, DEC, JAN, 810);
    run(&db, &ctx, "2026-12-15T00:00:00Z");
    run(&db, &ctx, "2026-12-15T00:05:00Z");

    let ids: Vec<String> = server.received().iter().map(|m| m.message_id()).collect();
    assert_eq!(
        ids,
        vec![
            "<quota-alert.2.tokens.month.all.20261101T000000Z.80@example.com>",
            "<quota-alert.2.tokens.month.all.20261201T000000Z.80@example.com>"
        ]
    );
}

#[test]
fn with_the_smtp_server_down_for_several_runs_every_alert_is_delivered_exactly_once_when_it_is_back()
 {
    let (db, mut server, ctx) = seeded_with_smtp();
    for user in 1..=3 {
        set_tokens(&db, user, NOV, DEC, 900);
    }

    server.stop();
    for now in [
        "2026-11-10T12:00:00Z",
        "2026-11-10T12:05:00Z",
        "2026-11-10T12:10:00Z",
    ] {
        let report = run(&db, &ctx, now);
        assert_eq!(report.details["sent"], 0);
    }
    assert!(alerts(&db).iter().all(|r| r.status == "pending"
        && r.attempts == 3
        && r.error_class.as_deref() == Some("connection")));

    server.restart();
    let report = run(&db, &ctx, "2026-11-10T13:00:00Z");
    assert_eq!(report.details["sent"], 3);
    run(&db, &ctx, "2026-11-10T14:00:00Z");
    run(&db, &ctx, "2026-11-11T14:00:00Z");

    assert_eq!(
        server.recipients(),
        vec!["ada@example.com", "bob@example.com", "cy@example.com"]
    );
    assert!(
        alerts(&db)
            .iter()
            .all(|r| r.status == "sent" && r.attempts == 4)
    );
}

#[test]
fn a_550_rejection_fails_that_alert_at_once_and_the_others_are_delivered() {
    let (db, server, ctx) = seeded_with_smtp();
    server.reject("bob@example.com");
    for user in 1..=3 {
        set_tokens(&db, user, NOV, DEC, 900);
    }

    let report = run(&db, &ctx, "2026-11-10T12:00:00Z");
    run(&db, &ctx, "2026-11-10T13:00:00Z");

    assert_eq!(report.details["failed"], 1);
    assert_eq!(
        server.recipients(),
        vec!["ada@example.com", "cy@example.com"]
    );
    let bob = alerts(&db).into_iter().find(|r| r.user_id == 2).unwrap();
    assert_eq!(bob.status, "failed");
    assert_eq!(bob.attempts, 1);
    assert_eq!(bob.error_class.as_deref(), Some("permanent"));
}

#[test]
fn a_crash_between_send_and_commit_leads_to_at_most_one_more_delivery_with_the_same_message_id() {
    let (db, server, ctx) = seeded_with_smtp();
    set_tokens(&db, 1, NOV, DEC, 900);
    let crashing = Ctx::with_mailer(
        ctx.settings.clone(),
        db.url.clone(),
        Arc::new(CrashAfterSend(mail::from_settings(&ctx.settings.mail))),
    );

    let crashed = std::panic::catch_unwind(AssertUnwindSafe(|| {
        JobKind::Alerts.run(
            &crashing,
            &mut db.conn(),
            at("2026-11-10T12:00:00Z"),
            &RunOpts::default(),
        )
    }));
    assert!(crashed.is_err());
    assert_eq!(statuses(&db), vec![(1, 80, "sending".to_string())]);

    // The lease (15 minutes) of the crashed run still holds: nothing is sent twice yet.
    run(&db, &ctx, "2026-11-10T12:05:00Z");
    assert_eq!(server.received().len(), 1);
    // Once it has run out, the alert is sent again, as the same message.
    run(&db, &ctx, "2026-11-10T12:20:00Z");
    run(&db, &ctx, "2026-11-10T12:25:00Z");

    let ids: Vec<String> = server.received().iter().map(|m| m.message_id()).collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], ids[1]);
    assert_eq!(statuses(&db), vec![(1, 80, "sent".to_string())]);
}

#[test]
fn an_opted_out_user_gets_suppressed_rows_and_no_email() {
    let (db, server, ctx) = seeded_with_smtp();
    db.execute("UPDATE users SET alerts_enabled = false WHERE id = 3");
    set_tokens(&db, 3, NOV, DEC, 990);

    run(&db, &ctx, "2026-11-10T12:00:00Z");

    assert!(server.received().is_empty());
    assert_eq!(
        statuses(&db),
        vec![
            (3, 80, "suppressed".to_string()),
            (3, 95, "suppressed".to_string())
        ]
    );
}

#[test]
fn a_user_who_opts_out_before_a_pending_alert_is_delivered_gets_no_email() {
    let (db, mut server, ctx) = seeded_with_smtp();
    set_tokens(&db, 3, NOV, DEC, 850);
    server.stop();
    run(&db, &ctx, "2026-11-10T12:00:00Z");
    db.execute("UPDATE users SET alerts_enabled = false WHERE id = 3");
    server.restart();

    run(&db, &ctx, "2026-11-10T13:00:00Z");

    assert!(server.received().is_empty());
    assert_eq!(statuses(&db), vec![(3, 80, "suppressed".to_string())]);
}

#[test]
fn a_plan_upgraded_mid_period_below_80_percent_sends_no_new_email() {
    let (db, server, ctx) = seeded_with_smtp();
    // Ada was warned at 80 % of the free plan; Bob upgraded before any run noticed.
    set_tokens(&db, 1, NOV, DEC, 850);
    run(&db, &ctx, "2026-11-10T12:00:00Z");
    set_tokens(&db, 2, NOV, DEC, 850);
    db.execute("UPDATE users SET plan_id = 2 WHERE id IN (1, 2)");
    set_tokens(&db, 1, NOV, DEC, 5000);

    run(&db, &ctx, "2026-11-12T12:00:00Z");

    assert_eq!(server.received().len(), 1);
    assert_eq!(statuses(&db), vec![(1, 80, "sent".to_string())]);
}

#[test]
fn unlimited_metrics_never_alert_and_kind_scoped_limits_use_that_kinds_totals() {
    let (db, server, ctx) = seeded_with_smtp();
    db.execute(&format!(
        "UPDATE users SET plan_id = 3 WHERE id = 1;
         INSERT INTO usage_periods (user_id, period, period_start, period_end, tokens, requests)
         VALUES (1, 'month', '{NOV}', '{DEC}', 10000000, 5000);
         INSERT INTO usage_periods (user_id, period, period_start, period_end, requests)
         VALUES (2, 'day', '2026-11-10T00:00:00Z', '2026-11-11T00:00:00Z', 40);
         INSERT INTO usage_period_kind_totals (user_id, period, period_start, kind, requests)
         VALUES (2, 'day', '2026-11-10T00:00:00Z', 'message_sent', 31),
                (2, 'day', '2026-11-10T00:00:00Z', 'image_generation', 9);"
    ));

    run(&db, &ctx, "2026-11-10T12:00:00Z");

    assert_eq!(
        subjects(&server),
        vec!["You have used 80% of your daily image generation request quota"]
    );
    assert_eq!(statuses(&db), vec![(2, 80, "sent".to_string())]);
}

#[test]
fn transient_failures_retry_with_backoff_and_give_up_after_max_attempts() {
    let (db, mut server, ctx) = seeded_with_smtp_and(|s| s.alerts.max_attempts = 3);
    set_tokens(&db, 1, NOV, DEC, 900);
    server.stop();

    run(&db, &ctx, "2026-11-10T12:00:00Z");
    // Backoff: the next attempt is a minute later, so a run 30 s later tries nothing.
    run(&db, &ctx, "2026-11-10T12:00:30Z");
    assert_eq!(alerts(&db)[0].attempts, 1);
    run(&db, &ctx, "2026-11-10T12:01:00Z");
    run(&db, &ctx, "2026-11-10T12:02:00Z");
    assert_eq!(alerts(&db)[0].attempts, 2);
    run(&db, &ctx, "2026-11-10T12:03:00Z");
    server.restart();
    run(&db, &ctx, "2026-11-10T15:00:00Z");

    let row = &alerts(&db)[0];
    assert_eq!(
        (
            row.status.as_str(),
            row.attempts,
            row.error_class.as_deref()
        ),
        ("failed", 3, Some("connection"))
    );
    assert!(server.received().is_empty());
}

#[test]
fn an_alert_undelivered_a_day_after_its_period_ended_expires() {
    let (db, mut server, ctx) = seeded_with_smtp();
    set_tokens(&db, 1, NOV, DEC, 900);
    server.stop();
    run(&db, &ctx, "2026-11-30T23:00:00Z");
    server.restart();

    run(&db, &ctx, "2026-12-02T00:00:00Z");

    assert_eq!(statuses(&db), vec![(1, 80, "expired".to_string())]);
    assert!(server.received().is_empty());
}

#[test]
fn an_invalid_address_fails_at_once_without_reaching_the_server() {
    let (db, server, ctx) = seeded_with_smtp();
    db.execute("UPDATE users SET email = 'bob at example dot com' WHERE id = 2");
    set_tokens(&db, 2, NOV, DEC, 900);

    run(&db, &ctx, "2026-11-10T12:00:00Z");

    let row = &alerts(&db)[0];
    assert_eq!(
        (row.status.as_str(), row.error_class.as_deref()),
        ("failed", Some("invalid_address"))
    );
    assert!(server.received().is_empty());
}

#[test]
fn dry_run_lists_who_would_be_emailed_and_why_and_changes_nothing() {
    let (db, server, ctx) = seeded_with_smtp();
    set_tokens(&db, 1, NOV, DEC, 970);
    let report = JobKind::Alerts
        .run(
            &ctx,
            &mut db.conn(),
            at("2026-11-10T12:00:00Z"),
            &support::dry_run(),
        )
        .unwrap();

    let lines = support::report_lines(&report);
    assert_eq!(
        lines,
        vec![
            "user 1 a***@example.com: would record as superseded (a higher threshold is sent): 80% of monthly tokens: 970 tokens of 1,000 tokens in the period from 2026-11-01 00:00Z",
            "user 1 a***@example.com: would email: 95% of monthly tokens: 970 tokens of 1,000 tokens in the period from 2026-11-01 00:00Z"
        ]
    );
    assert!(alerts(&db).is_empty());
    assert!(server.received().is_empty());
}

#[test]
fn the_file_transport_writes_one_eml_per_alert_and_a_rerun_adds_none() {
    let db = TestDb::new();
    seed(&db);
    let dir = tempfile::tempdir().unwrap();
    let ctx = db.ctx_with(|s| {
        s.mail.transport = Some(MailTransportKind::File);
        s.mail.file.dir = Some(dir.path().join("mail"));
        s.mail.from = "usage@example.com".into();
    });
    set_tokens(&db, 1, NOV, DEC, 900);
    set_tokens(&db, 2, NOV, DEC, 990);

    run(&db, &ctx, "2026-11-10T12:00:00Z");
    run(&db, &ctx, "2026-11-10T12:05:00Z");

    let mut files: Vec<String> = std::fs::read_dir(dir.path().join("mail"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        vec![
            "quota-alert.1.tokens.month.all.20261101T000000Z.80@example.com.eml",
            "quota-alert.2.tokens.month.all.20261101T000000Z.95@example.com.eml"
        ]
    );
}

#[test]
fn no_more_messages_are_in_flight_at_once_than_the_smtp_pool_allows() {
    let (db, server, ctx) = seeded_with_smtp_and(|s| s.mail.smtp.pool_size = 2);
    db.execute(
        "INSERT INTO users (id, email, name, plan_id)
         SELECT g, 'user' || g || '@example.com', 'User ' || g, 1 FROM generate_series(10, 29) g",
    );
    for user in 10..30 {
        set_tokens(&db, user, NOV, DEC, 900);
    }

    let report = run(&db, &ctx, "2026-11-10T12:00:00Z");

    assert_eq!(report.details["sent"], 20);
    assert_eq!(server.received().len(), 20);
    assert!(server.max_in_flight() <= 2, "{}", server.max_in_flight());
}

#[test]
fn run_alerts_dry_run_on_the_command_line_prints_who_would_be_emailed() {
    let db = TestDb::new();
    seed(&db);
    set_tokens(&db, 2, NOV, DEC, 990);
    let dir = tempfile::tempdir().unwrap();
    let config = support::config_file(
        dir.path(),
        &format!(
            "[database]\nurl = \"{}\"\n[mail]\ntransport = \"log\"\n",
            db.url
        ),
    );

    let stdout = support::stdout_of_success(
        support::binary()
            .args(["--config", config.to_str().unwrap()])
            .args([
                "--run",
                "alerts",
                "--dry-run",
                "--at",
                "2026-11-10T12:00:00Z",
            ]),
    );
    assert!(
        stdout.contains("alerts: user 2 b***@example.com: would email: 95% of monthly tokens: 990 tokens of 1,000 tokens"),
        "{stdout}"
    );
    assert!(!stdout.contains("bob@example.com"));
    assert!(stdout.contains("(dry run: nothing was changed)"));
    assert!(alerts(&db).is_empty());
}

#[test]
fn a_run_limited_to_one_user_decides_and_delivers_only_that_users_alerts() {
    let (db, server, ctx) = seeded_with_smtp();
    set_tokens(&db, 1, NOV, DEC, 900);
    set_tokens(&db, 2, NOV, DEC, 900);
    let only_bob = RunOpts {
        user_id: Some(2),
        ..RunOpts::default()
    };

    JobKind::Alerts
        .run(&ctx, &mut db.conn(), at("2026-11-10T12:00:00Z"), &only_bob)
        .unwrap();

    assert_eq!(statuses(&db), vec![(2, 80, "sent".to_string())]);
    assert_eq!(server.recipients(), vec!["bob@example.com"]);
}
