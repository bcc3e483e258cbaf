//! Quota alerts on an organization's shared quota: every owner and admin is emailed once per
//! threshold and period, members never; the organization and its largest users are named.
//! Organization periods are written with SQL (user_id 0, org_id N), as aggregation would.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Int2, Text};
use usage_worker::jobs::{Ctx, JobKind, JobReport, RunOpts};
use usage_worker::mail;
use usage_worker::mail::templates::{Templates, sample_org_content};

use crate::support::outbox::{CrashAfterSend, unfolded};
use crate::support::smtp::SmtpServer;
use crate::support::webhooks::{Receiver, SECRET_A};
use crate::support::{self, TestDb, at};

/// November 2026 in New York (EDT until the 1st at 02:00, then EST).
const NOV: &str = "2026-11-01T04:00:00Z";
const DEC: &str = "2026-12-01T05:00:00Z";

/// Plan `team` allows 1,000 tokens a month. Organization 7, Acme, in New York: Ada owner, Bob
/// admin, Cy member, Dee admin with alerts off. Organization 8, Globex, has alerts off; Ada
/// owns it.
fn seed(db: &TestDb) {
    db.execute(
        "INSERT INTO plans (id, name) VALUES (1, 'team');
         INSERT INTO plan_limits (plan_id, metric, period, kind, max_value) VALUES
             (1, 'tokens', 'month', '', 1000);
         INSERT INTO users (id, email, name, timezone, alerts_enabled) VALUES
             (1, 'ada@example.com', 'Ada', 'Europe/Berlin', true),
             (2, 'bob@example.com', 'Bob', 'UTC', true),
             (3, 'cy@example.com', 'Cy', 'UTC', true),
             (4, 'dee@example.com', 'Dee', 'UTC', false);
         INSERT INTO organizations (id, name, timezone, plan_id, alerts_enabled) VALUES
             (7, 'Acme', 'America/New_York', 1, true),
             (8, 'Globex', 'UTC', 1, false);
         INSERT INTO organization_members (org_id, user_id, role) VALUES
             (7, 1, 'owner'), (7, 2, 'admin'), (7, 3, 'member'), (7, 4, 'admin'),
             (8, 1, 'owner');",
    );
}

/// Sets an organization's token total in its open period from `start` to `end`.
fn set_org_tokens(db: &TestDb, org: i64, start: &str, end: &str, tokens: i64) {
    db.execute(&format!(
        "INSERT INTO usage_periods (user_id, org_id, period, period_start, period_end, tokens)
         VALUES (0, {org}, 'month', '{start}', '{end}', {tokens})
         ON CONFLICT (user_id, org_id, period, period_start) DO UPDATE SET tokens = EXCLUDED.tokens"
    ));
}

fn seeded_with_smtp() -> (TestDb, SmtpServer, Arc<Ctx>) {
    let db = TestDb::new();
    seed(&db);
    let server = SmtpServer::start();
    let ctx = db.ctx_with(|s| server.configure(&mut s.mail));
    (db, server, ctx)
}

fn run(db: &TestDb, ctx: &Ctx, now: &str) -> JobReport {
    JobKind::Alerts
        .run(ctx, &mut db.conn(), at(now), &RunOpts::default())
        .unwrap()
}

#[derive(QueryableByName, Debug, PartialEq)]
struct Row {
    #[diesel(sql_type = BigInt)]
    org_id: i64,
    #[diesel(sql_type = BigInt)]
    user_id: i64,
    #[diesel(sql_type = Int2)]
    threshold: i16,
    #[diesel(sql_type = Text)]
    status: String,
}

/// Every alert as (organization, recipient, threshold, status).
fn alerts(db: &TestDb) -> Vec<(i64, i64, i16, String)> {
    diesel::sql_query(
        "SELECT org_id, user_id, threshold, status FROM quota_alerts
          ORDER BY org_id, user_id, period_start, threshold",
    )
    .load::<Row>(&mut db.conn())
    .unwrap()
    .into_iter()
    .map(|r| (r.org_id, r.user_id, r.threshold, r.status))
    .collect()
}

fn row(org: i64, user: i64, threshold: i16, status: &str) -> (i64, i64, i16, String) {
    (org, user, threshold, status.to_string())
}

fn message_ids(server: &SmtpServer) -> Vec<String> {
    let mut ids: Vec<String> = server.received().iter().map(|m| m.message_id()).collect();
    ids.sort();
    ids
}

#[test]
fn every_owner_and_admin_is_emailed_once_per_threshold_members_never_and_reruns_send_nothing() {
    let (db, server, ctx) = seeded_with_smtp();

    set_org_tokens(&db, 7, NOV, DEC, 820);
    run(&db, &ctx, "2026-11-10T12:00:00Z");
    run(&db, &ctx, "2026-11-10T12:05:00Z");
    assert_eq!(
        server.recipients(),
        vec!["ada@example.com", "bob@example.com"]
    );
    assert_eq!(
        server.received()[0].header("Subject").unwrap(),
        "Acme has used 80% of its monthly token quota"
    );

    set_org_tokens(&db, 7, NOV, DEC, 960);
    run(&db, &ctx, "2026-11-12T08:00:00Z");
    run(&db, &ctx, "2026-11-12T08:05:00Z");
    run(&db, &ctx, "2026-11-20T08:05:00Z");

    assert_eq!(
        message_ids(&server),
        vec![
            "<org-quota-alert.7.1.tokens.month.all.20261101T040000Z.80@example.com>",
            "<org-quota-alert.7.1.tokens.month.all.20261101T040000Z.95@example.com>",
            "<org-quota-alert.7.2.tokens.month.all.20261101T040000Z.80@example.com>",
            "<org-quota-alert.7.2.tokens.month.all.20261101T040000Z.95@example.com>",
        ]
    );
    assert_eq!(
        alerts(&db),
        vec![
            row(7, 1, 80, "sent"),
            row(7, 1, 95, "sent"),
            row(7, 2, 80, "sent"),
            row(7, 2, 95, "sent"),
            row(7, 4, 80, "suppressed"),
            row(7, 4, 95, "suppressed"),
        ]
    );
}

#[test]
fn user_zero_is_alerted_on_their_own_quota_and_on_their_organizations_apart() {
    let (db, server, ctx) = seeded_with_smtp();
    db.execute(
        "INSERT INTO users (id, email, name, plan_id) VALUES (0, 'zero@example.com', 'Zero', 1);
         INSERT INTO organization_members (org_id, user_id, role) VALUES (7, 0, 'owner');",
    );
    // User 0's personal November (org 0) and organization 7's (user 0): two subjects.
    db.execute(
        "INSERT INTO usage_periods (user_id, org_id, period, period_start, period_end, tokens)
         VALUES (0, 0, 'month', '2026-11-01T00:00:00Z', '2026-12-01T00:00:00Z', 300)",
    );
    set_org_tokens(&db, 7, NOV, DEC, 850);

    run(&db, &ctx, "2026-11-10T12:00:00Z");
    assert_eq!(
        alerts(&db),
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

#[test]
fn a_crash_between_send_and_commit_resends_each_recipients_email_at_most_once_with_its_id() {
    let (db, server, ctx) = seeded_with_smtp();
    set_org_tokens(&db, 7, NOV, DEC, 900);
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
    assert_eq!(server.received().len(), 2);

    // Within the crashed run's lease nothing is sent again; after it, each email once more.
    run(&db, &ctx, "2026-11-10T12:05:00Z");
    assert_eq!(server.received().len(), 2);
    run(&db, &ctx, "2026-11-10T12:20:00Z");
    run(&db, &ctx, "2026-11-10T12:25:00Z");

    assert_eq!(
        message_ids(&server),
        vec![
            "<org-quota-alert.7.1.tokens.month.all.20261101T040000Z.80@example.com>",
            "<org-quota-alert.7.1.tokens.month.all.20261101T040000Z.80@example.com>",
            "<org-quota-alert.7.2.tokens.month.all.20261101T040000Z.80@example.com>",
            "<org-quota-alert.7.2.tokens.month.all.20261101T040000Z.80@example.com>",
        ]
    );
    assert_eq!(
        alerts(&db),
        vec![
            row(7, 1, 80, "sent"),
            row(7, 2, 80, "sent"),
            row(7, 4, 80, "suppressed"),
        ]
    );
}

#[test]
fn an_organization_with_alerts_off_gets_suppressed_rows_and_no_email() {
    let (db, server, ctx) = seeded_with_smtp();
    set_org_tokens(&db, 8, "2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z", 990);

    run(&db, &ctx, "2026-11-10T12:00:00Z");

    assert!(server.received().is_empty());
    assert_eq!(
        alerts(&db),
        vec![row(8, 1, 80, "suppressed"), row(8, 1, 95, "suppressed")]
    );
}

#[test]
fn alerts_turned_off_or_a_recipient_demoted_before_delivery_send_nothing_to_them() {
    let (db, mut server, ctx) = seeded_with_smtp();
    set_org_tokens(&db, 7, NOV, DEC, 850);
    db.execute("UPDATE organizations SET alerts_enabled = true WHERE id = 8");
    set_org_tokens(&db, 8, "2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z", 850);
    server.stop();
    run(&db, &ctx, "2026-11-10T12:00:00Z");
    db.execute(
        "UPDATE organization_members SET role = 'member' WHERE org_id = 7 AND user_id = 2;
         UPDATE organizations SET alerts_enabled = false WHERE id = 8;",
    );
    server.restart();

    run(&db, &ctx, "2026-11-10T13:00:00Z");

    assert_eq!(
        message_ids(&server),
        vec!["<org-quota-alert.7.1.tokens.month.all.20261101T040000Z.80@example.com>"]
    );
    assert_eq!(
        alerts(&db),
        vec![
            row(7, 1, 80, "sent"),
            row(7, 2, 80, "suppressed"),
            row(7, 4, 80, "suppressed"),
            row(8, 1, 80, "suppressed"),
        ]
    );
}

#[test]
fn the_email_names_the_organization_its_largest_users_and_the_recipient_as_you() {
    let (db, server, ctx) = seeded_with_smtp();
    set_org_tokens(&db, 7, NOV, DEC, 900);
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
         VALUES (0, 7, 'day', '{NOV}', '2026-11-02T05:00:00Z', 100);
         INSERT INTO token_usage_daily (user_id, day, kind, request_type, model, events, tokens, org_id)
         VALUES (3, '2026-11-01', 'ai_response', '', '', 1, 100, 7),
                (2, '2026-11-02', 'ai_response', '', '', 1, 850, 7)"
    ));
    set_org_tokens(&db, 7, NOV, DEC, 950);

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
fn the_built_in_organization_alert_email_reads_as_intended() {
    let rendered = Templates::load(None)
        .unwrap()
        .render(&sample_org_content())
        .unwrap();
    insta::assert_snapshot!("org_subject", rendered.subject);
    insta::assert_snapshot!("org_text", rendered.text);
    insta::assert_snapshot!("org_html", rendered.html);
}

#[test]
fn organization_and_member_names_cannot_add_headers_or_markup() {
    let mut content = sample_org_content();
    let org = content.organization.as_mut().unwrap();
    org.name = "Acme\r\nBcc: victim@example.org <script>x</script>".into();
    org.top_members[0].name = "<script>alert(1)</script>\r\nEve".into();
    let rendered = Templates::load(None).unwrap().render(&content).unwrap();

    assert_eq!(
        rendered.subject,
        "Acme Bcc: victim@example.org <script>x</script> has used 80% of its monthly token quota"
    );
    assert!(!rendered.html.contains("<script>"), "{}", rendered.html);
    assert!(
        rendered
            .html
            .contains("<li>&lt;script&gt;alert(1)&lt;&#x2f;script&gt; Eve: 41,200 tokens</li>"),
        "{}",
        rendered.html
    );
    assert!(!rendered.text.contains('\r'));
}

#[test]
fn dry_run_lists_the_organization_and_each_recipient_and_changes_nothing() {
    let (db, server, ctx) = seeded_with_smtp();
    set_org_tokens(&db, 7, NOV, DEC, 970);

    let report = JobKind::Alerts
        .run(
            &ctx,
            &mut db.conn(),
            at("2026-11-10T12:00:00Z"),
            &support::dry_run(),
        )
        .unwrap();

    let lines = support::report_lines(&report);
    let what = "monthly tokens: 970 tokens of 1,000 tokens in the period from 2026-11-01 04:00Z";
    assert_eq!(
        lines,
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
    );
    assert!(alerts(&db).is_empty());
    assert!(server.received().is_empty());
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
    set_org_tokens(&db, 7, NOV, DEC, 850);

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
