//! How quota alerts reach their recipients: through an SMTP server that may be down, reject
//! an address or crash the run between sending and committing; retries with backoff, expiry,
//! invalid addresses, the file transport and the SMTP pool's bound.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use usage_worker::config::MailTransportKind;
use usage_worker::jobs::{Ctx, JobKind, RunOpts};
use usage_worker::mail;
use usage_worker::subject::Subject;

use crate::support::alerts::{
    ACME, ADA, DEC, NOV, alerts, message_ids, row, run, seed, seeded_with_smtp,
    seeded_with_smtp_and, set_tokens, statuses,
};
use crate::support::outbox::CrashAfterSend;
use crate::support::{TestDb, at};

#[test]
fn with_the_smtp_server_down_for_several_runs_every_alert_is_delivered_exactly_once_when_it_is_back()
 {
    let (db, mut server, ctx) = seeded_with_smtp();
    for user in 1..=3 {
        set_tokens(&db, Subject::User(user), NOV, DEC, 900);
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
        set_tokens(&db, Subject::User(user), NOV, DEC, 900);
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
fn a_crash_between_send_and_commit_resends_each_recipients_email_at_most_once_with_its_id() {
    for case in [ADA, ACME] {
        let (db, server, ctx) = seeded_with_smtp();
        case.set_tokens(&db, 900);
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
        let told = case.addresses().len();
        assert_eq!(server.received().len(), told, "{}", case.subject);
        if let Subject::User(_) = case.subject {
            assert_eq!(statuses(&db), vec![row(0, 1, 80, "sending")]);
        }

        // The lease (15 minutes) of the crashed run still holds: nothing is sent twice yet.
        run(&db, &ctx, "2026-11-10T12:05:00Z");
        assert_eq!(server.received().len(), told);
        // Once it has run out, each email is sent again, as the same message.
        run(&db, &ctx, "2026-11-10T12:20:00Z");
        run(&db, &ctx, "2026-11-10T12:25:00Z");

        let mut twice = case.message_ids(&[80]);
        twice.extend(case.message_ids(&[80]));
        twice.sort();
        assert_eq!(message_ids(&server), twice);
        assert_eq!(statuses(&db), case.rows(&[80], "sent"));
    }
}

#[test]
fn transient_failures_retry_with_backoff_and_give_up_after_max_attempts() {
    let (db, mut server, ctx) = seeded_with_smtp_and(|s| s.alerts.max_attempts = 3);
    ADA.set_tokens(&db, 900);
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
    ADA.set_tokens(&db, 900);
    server.stop();
    run(&db, &ctx, "2026-11-30T23:00:00Z");
    server.restart();

    run(&db, &ctx, "2026-12-02T00:00:00Z");

    assert_eq!(statuses(&db), vec![row(0, 1, 80, "expired")]);
    assert!(server.received().is_empty());
}

#[test]
fn an_invalid_address_fails_at_once_without_reaching_the_server() {
    let (db, server, ctx) = seeded_with_smtp();
    db.execute("UPDATE users SET email = 'bob at example dot com' WHERE id = 2");
    set_tokens(&db, Subject::User(2), NOV, DEC, 900);

    run(&db, &ctx, "2026-11-10T12:00:00Z");

    let row = &alerts(&db)[0];
    assert_eq!(
        (row.status.as_str(), row.error_class.as_deref()),
        ("failed", Some("invalid_address"))
    );
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
    ADA.set_tokens(&db, 900);
    set_tokens(&db, Subject::User(2), NOV, DEC, 990);

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
        set_tokens(&db, Subject::User(user), NOV, DEC, 900);
    }

    let report = run(&db, &ctx, "2026-11-10T12:00:00Z");

    assert_eq!(report.details["sent"], 20);
    assert_eq!(server.received().len(), 20);
    assert!(server.max_in_flight() <= 2, "{}", server.max_in_flight());
}
