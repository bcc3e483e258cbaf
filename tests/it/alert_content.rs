//! What an alert says, and to whom: the lines of a dry run (who would be emailed and why, for
//! a user's quota and for each owner and admin of an organization's), the organization's email
//! naming its largest users of the period, and the webhook event naming the subject.

use std::sync::Arc;
use std::time::Duration;

use usage_worker::jobs::{Ctx, JobKind};
use usage_worker::mail;
use usage_worker::subject::Subject;

use crate::support::alerts::{
    ACME, ADA, DEC, NOV, NY_NOV, run, seed, seeded_with_smtp, set_tokens, statuses,
};
use crate::support::outbox::unfolded;
use crate::support::webhooks::{Receiver, SECRET_A};
use crate::support::{self, TestDb, at};

/// The lines a dry run prints about the case's alerts at 97 % of its monthly tokens.
fn dry_run_lines(subject: Subject) -> Vec<String> {
    match subject {
        Subject::User(_) => vec![
            "user 1 a***@example.com: would record as superseded (a higher threshold is sent): 80% of monthly tokens: 970 tokens of 1,000 tokens in the period from 2026-11-01 00:00Z".to_string(),
            "user 1 a***@example.com: would email: 95% of monthly tokens: 970 tokens of 1,000 tokens in the period from 2026-11-01 00:00Z".to_string(),
        ],
        Subject::Org(_) => {
            let what = "monthly tokens: 970 tokens of 1,000 tokens in the period from 2026-11-01 04:00Z";
            vec![
                format!(
                    "org 7 (Acme) → owner user 1 a***@example.com: would record as superseded (a higher threshold is sent): 80% of {what}"
                ),
                format!("org 7 (Acme) → owner user 1 a***@example.com: would email: 95% of {what}"),
                format!(
                    "org 7 (Acme) → admin user 2 b***@example.com: would record as superseded (a higher threshold is sent): 80% of {what}"
                ),
                format!("org 7 (Acme) → admin user 2 b***@example.com: would email: 95% of {what}"),
                format!(
                    "org 7 (Acme) → admin user 4 d***@example.com: would record as suppressed (this user's alerts are off): 80% of {what}"
                ),
                format!(
                    "org 7 (Acme) → admin user 4 d***@example.com: would record as suppressed (this user's alerts are off): 95% of {what}"
                ),
            ]
        }
    }
}

#[test]
fn dry_run_lists_each_recipient_who_would_be_emailed_and_why_and_changes_nothing() {
    for case in [ADA, ACME] {
        let (db, server, ctx) = seeded_with_smtp();
        case.set_tokens(&db, 970);

        let report = JobKind::Alerts
            .run(
                &ctx,
                &mut db.conn(),
                at("2026-11-10T12:00:00Z"),
                &support::dry_run(),
            )
            .unwrap();

        assert_eq!(
            support::report_lines(&report),
            dry_run_lines(case.subject),
            "{}",
            case.subject
        );
        assert!(statuses(&db).is_empty());
        assert!(server.received().is_empty());
    }
}

#[test]
fn run_alerts_dry_run_on_the_command_line_prints_who_would_be_emailed() {
    let db = TestDb::new();
    seed(&db);
    set_tokens(&db, Subject::User(2), NOV, DEC, 990);
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
    assert!(statuses(&db).is_empty());
}

#[test]
fn the_email_names_the_organization_its_largest_users_and_the_recipient_as_you() {
    let (db, server, ctx) = seeded_with_smtp();
    ACME.set_tokens(&db, 900);
    // Local days of Acme (New York). Dee's personal usage and October are not Acme's November.
    db.execute(
        "INSERT INTO token_usage_daily (user_id, day, kind, request_type, model, events, tokens, org_id)
         VALUES (3, '2026-11-02', 'ai_response', '', '', 5, 500, 7),
                (1, '2026-11-03', 'ai_response', '', '', 2, 200, 7),
                (1, '2026-11-04', 'ai_response', '', '', 1, 100, 7),
                (2, '2026-11-04', 'ai_response', '', '', 1, 100, 7),
                (4, '2026-11-05', 'ai_response', '', '', 1, 50, 7),
                (4, '2026-11-05', 'ai_response', '', '', 9, 9000, NULL),
                (4, '2026-10-31', 'ai_response', '', '', 9, 9000, 7)",
    );

    run(&db, &ctx, "2026-11-10T12:00:00Z");

    let received = server.received();
    let to_ada = received
        .iter()
        .find(|m| m.rcpt == ["ada@example.com"])
        .expect("an email to Ada");
    let text = unfolded(&to_ada.data);
    for expected in [
        "Acme has used 90% of its monthly token quota: 900 tokens of 1,000 tokens.",
        "Largest users in this period: Cy (500 tokens), you (300 tokens), Bob (100 tokens).",
        "resets on Tuesday 1 December 2026, 00:00 EST (America/New_York)",
    ] {
        assert!(text.contains(expected), "{expected:?} not in {text}");
    }
    let to_bob = received
        .iter()
        .find(|m| m.rcpt == ["bob@example.com"])
        .expect("an email to Bob");
    assert!(
        unfolded(&to_bob.data).contains("Cy (500 tokens), Ada (300 tokens), you (100 tokens)."),
        "{}",
        to_bob.data
    );
}

#[test]
fn a_day_and_a_month_alert_starting_together_each_name_the_largest_users_of_their_own_period() {
    let (db, server, ctx) = seeded_with_smtp();
    // Acme's day and month both start at New York's midnight of 1 November: the two alerts
    // share organization, metric, kind and start, and differ only in their period.
    db.execute(&format!(
        "INSERT INTO plan_limits (plan_id, metric, period, kind, max_value)
         VALUES (1, 'tokens', 'day', '', 100);
         INSERT INTO usage_periods (user_id, org_id, period, period_start, period_end, tokens)
         VALUES (0, 7, 'day', '{NY_NOV}', '2026-11-02T05:00:00Z', 100);
         INSERT INTO token_usage_daily (user_id, day, kind, request_type, model, events, tokens, org_id)
         VALUES (3, '2026-11-01', 'ai_response', '', '', 1, 100, 7),
                (2, '2026-11-02', 'ai_response', '', '', 1, 850, 7)"
    ));
    ACME.set_tokens(&db, 950);

    run(&db, &ctx, "2026-11-01T20:00:00Z");

    let to_ada: Vec<String> = server
        .received()
        .iter()
        .filter(|m| m.rcpt == ["ada@example.com"])
        .map(|m| unfolded(&m.data))
        .collect();
    assert_eq!(to_ada.len(), 2, "a day and a month alert: {to_ada:?}");
    let daily = to_ada.iter().find(|t| t.contains("daily token quota"));
    let monthly = to_ada.iter().find(|t| t.contains("monthly token quota"));
    let (Some(daily), Some(monthly)) = (daily, monthly) else {
        panic!("one daily and one monthly email: {to_ada:?}");
    };
    assert!(
        daily.contains("Largest users in this period: Cy (100 tokens)."),
        "{daily}"
    );
    assert!(
        monthly.contains("Largest users in this period: Bob (850 tokens), Cy (100 tokens)."),
        "{monthly}"
    );
}

#[test]
fn an_organizations_threshold_is_one_webhook_event_naming_the_organization() {
    let (db, server, _) = seeded_with_smtp();
    let receiver = Receiver::start(&[SECRET_A], &[]);
    let mut settings = db.settings();
    server.configure(&mut settings.mail);
    settings.alerts.webhooks = vec![receiver.endpoint(&[SECRET_A], Duration::from_secs(5))];
    let ctx = Ctx::with_mailer(
        Arc::new(settings.clone()),
        db.url.clone(),
        mail::from_settings(&settings.mail),
    );
    ACME.set_tokens(&db, 850);

    run(&db, &ctx, "2026-11-10T12:00:00Z");
    // A new admin is emailed about the threshold already crossed; the event is not repeated.
    db.execute(
        "INSERT INTO users (id, email, name) VALUES (5, 'eve@example.com', 'Eve');
         INSERT INTO organization_members (org_id, user_id, role) VALUES (7, 5, 'admin');",
    );
    run(&db, &ctx, "2026-11-10T12:05:00Z");

    assert_eq!(
        server.recipients(),
        vec!["ada@example.com", "bob@example.com", "eve@example.com"]
    );
    // Received over HTTP and verified by the standardwebhooks package.
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(requests[0].verified, "{requests:?}");
    let data = &requests[0].body["data"];
    assert_eq!(
        data["subject"],
        serde_json::json!({"type": "organization", "id": 7, "name": "Acme"})
    );
    assert_eq!(data["timezone"], "America/New_York");
    assert_eq!(data["resets_at"], "2026-12-01T00:00:00-05:00");
}
