//! Which quota alerts are decided and sent, for a user's personal quota (the user is emailed)
//! and an organization's shared quota (every owner and admin is emailed, members never): once
//! per threshold and period, superseded by a higher one, suppressed when alerts are off, armed
//! again by a new period, limited to one user on request.

use usage_worker::jobs::{JobKind, RunOpts};
use usage_worker::subject::Subject;

use crate::support::alerts::{
    ACME, ADA, CY, Case, DEC, GLOBEX, JAN, NOV, message_ids, row, run, seeded_with_smtp,
    set_tokens, statuses, subjects,
};
use crate::support::{TestDb, at};

/// The email's subject line about `threshold` of the case's monthly tokens.
fn headline(case: &Case, threshold: i16) -> String {
    match case.subject {
        Subject::User(_) => format!("You have used {threshold}% of your monthly token quota"),
        Subject::Org(_) => format!("Acme has used {threshold}% of its monthly token quota"),
    }
}

#[test]
fn crossing_80_then_95_on_separate_runs_emails_each_recipient_once_per_threshold_and_reruns_send_nothing()
 {
    for case in [ADA, ACME] {
        let (db, server, ctx) = seeded_with_smtp();
        let told = case.addresses();

        case.set_tokens(&db, 820);
        run(&db, &ctx, "2026-11-10T12:00:00Z");
        run(&db, &ctx, "2026-11-10T12:05:00Z");
        assert_eq!(server.recipients(), told, "{}", case.subject);
        assert_eq!(subjects(&server), vec![headline(&case, 80); told.len()]);

        case.set_tokens(&db, 960);
        run(&db, &ctx, "2026-11-12T08:00:00Z");
        run(&db, &ctx, "2026-11-12T08:05:00Z");
        run(&db, &ctx, "2026-11-20T08:05:00Z");

        let mut expected = vec![headline(&case, 80); told.len()];
        expected.extend(vec![headline(&case, 95); told.len()]);
        assert_eq!(subjects(&server), expected);
        assert_eq!(message_ids(&server), case.message_ids(&[80, 95]));
        assert_eq!(statuses(&db), case.rows(&[80, 95], "sent"));
    }
}

#[test]
fn usage_jumping_straight_to_97_percent_sends_only_the_95_alert_and_supersedes_80() {
    let (db, server, ctx) = seeded_with_smtp();

    set_tokens(&db, Subject::User(2), NOV, DEC, 970);
    let report = run(&db, &ctx, "2026-11-10T12:00:00Z");
    run(&db, &ctx, "2026-11-10T12:05:00Z");

    assert_eq!(
        subjects(&server),
        vec!["You have used 95% of your monthly token quota"]
    );
    assert_eq!(
        statuses(&db),
        vec![row(0, 2, 80, "superseded"), row(0, 2, 95, "sent")]
    );
    assert_eq!(report.details["decided"]["superseded"], 1);
    let text = &server.received()[0].data;
    assert!(text.contains("970 tokens of 1,000 tokens"), "{text}");
}

#[test]
fn a_new_period_arms_every_threshold_again() {
    let (db, server, ctx) = seeded_with_smtp();

    set_tokens(&db, Subject::User(2), NOV, DEC, 850);
    run(&db, &ctx, "2026-11-20T00:00:00Z");
    db.execute(&format!(
        "UPDATE usage_periods SET status = 'closed', close_reason = 'rollover', closed_at = '{DEC}'
          WHERE user_id = 2 AND period_start = '{NOV}'"
    ));
    set_tokens(&db, Subject::User(2), DEC, JAN, 810);
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

/// Turns the alerts of `subject` off: a user's own, or an organization's.
fn alerts_off(db: &TestDb, subject: Subject) {
    let (_, id) = subject.report_key();
    db.execute(&format!(
        "UPDATE {} SET alerts_enabled = false WHERE id = {id}",
        subject.table()
    ));
}

#[test]
fn a_subject_with_alerts_off_gets_suppressed_rows_and_no_email() {
    // Cy opts out; Globex has its alerts off from the start.
    for case in [CY, GLOBEX] {
        let (db, server, ctx) = seeded_with_smtp();
        alerts_off(&db, case.subject);
        case.set_tokens(&db, 990);

        run(&db, &ctx, "2026-11-10T12:00:00Z");

        assert!(server.received().is_empty(), "{}", case.subject);
        assert_eq!(statuses(&db), case.rows(&[80, 95], "suppressed"));
    }
}

#[test]
fn alerts_turned_off_or_a_recipient_demoted_before_delivery_send_nothing_to_them() {
    let (db, mut server, ctx) = seeded_with_smtp();
    db.execute("UPDATE organizations SET alerts_enabled = true WHERE id = 8");
    for case in [CY, ACME, GLOBEX] {
        case.set_tokens(&db, 850);
    }
    server.stop();
    run(&db, &ctx, "2026-11-10T12:00:00Z");
    // Cy opts out, Globex turns its alerts off, Acme's admin Bob becomes a member.
    alerts_off(&db, CY.subject);
    alerts_off(&db, GLOBEX.subject);
    db.execute("UPDATE organization_members SET role = 'member' WHERE org_id = 7 AND user_id = 2");
    server.restart();

    run(&db, &ctx, "2026-11-10T13:00:00Z");

    assert_eq!(message_ids(&server), vec![ACME.message_id(1, 80)]);
    assert_eq!(
        statuses(&db),
        vec![
            row(0, 3, 80, "suppressed"),
            row(7, 1, 80, "sent"),
            row(7, 2, 80, "suppressed"),
            row(7, 4, 80, "suppressed"),
            row(8, 1, 80, "suppressed"),
        ]
    );
}

#[test]
fn a_plan_upgraded_mid_period_below_80_percent_sends_no_new_email() {
    let (db, server, ctx) = seeded_with_smtp();
    // Ada was warned at 80 % of the free plan; Bob upgraded before any run noticed.
    ADA.set_tokens(&db, 850);
    run(&db, &ctx, "2026-11-10T12:00:00Z");
    set_tokens(&db, Subject::User(2), NOV, DEC, 850);
    db.execute("UPDATE users SET plan_id = 2 WHERE id IN (1, 2)");
    ADA.set_tokens(&db, 5000);

    run(&db, &ctx, "2026-11-12T12:00:00Z");

    assert_eq!(server.received().len(), 1);
    assert_eq!(statuses(&db), vec![row(0, 1, 80, "sent")]);
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
    assert_eq!(statuses(&db), vec![row(0, 2, 80, "sent")]);
}

#[test]
fn a_run_limited_to_one_user_decides_and_delivers_only_that_users_alerts() {
    let (db, server, ctx) = seeded_with_smtp();
    ADA.set_tokens(&db, 900);
    set_tokens(&db, Subject::User(2), NOV, DEC, 900);
    let only_bob = RunOpts {
        user_id: Some(2),
        ..RunOpts::default()
    };

    JobKind::Alerts
        .run(&ctx, &mut db.conn(), at("2026-11-10T12:00:00Z"), &only_bob)
        .unwrap();

    assert_eq!(statuses(&db), vec![row(0, 2, 80, "sent")]);
    assert_eq!(server.recipients(), vec!["bob@example.com"]);
}

#[test]
fn user_zero_is_alerted_on_their_own_quota_and_on_their_organizations_apart() {
    let (db, server, ctx) = seeded_with_smtp();
    db.execute(
        "INSERT INTO users (id, email, name, plan_id) VALUES (0, 'zero@example.com', 'Zero', 1);
         INSERT INTO organization_members (org_id, user_id, role) VALUES (7, 0, 'owner');",
    );
    // User 0's personal November (org 0) and organization 7's (user 0): two subjects.
    set_tokens(&db, Subject::User(0), NOV, DEC, 300);
    ACME.set_tokens(&db, 850);

    run(&db, &ctx, "2026-11-10T12:00:00Z");
    assert_eq!(
        statuses(&db),
        vec![
            row(7, 0, 80, "sent"),
            row(7, 1, 80, "sent"),
            row(7, 2, 80, "sent"),
            row(7, 4, 80, "suppressed"),
        ]
    );

    db.execute("UPDATE usage_periods SET tokens = 900 WHERE user_id = 0 AND org_id = 0");
    run(&db, &ctx, "2026-11-10T12:05:00Z");
    let zero: Vec<String> = server
        .received()
        .iter()
        .filter(|m| m.rcpt == ["zero@example.com"])
        .map(|m| m.message_id())
        .collect();
    assert_eq!(
        zero,
        vec![
            "<org-quota-alert.7.0.tokens.month.all.20261101T040000Z.80@example.com>",
            "<quota-alert.0.tokens.month.all.20261101T000000Z.80@example.com>",
        ]
    );
}
