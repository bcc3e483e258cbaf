//! Credit alerts: `credit.low`, `credit.depleted` and `credit.recovered`, by email through a
//! real SMTP conversation and as Standard Webhooks verified by the `standardwebhooks` package,
//! each exactly once per crossing (a new grant is what can cross again), to a user or to an
//! organization's owners and admins, through the quota alerts' outbox.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Int2, Text};

use crate::support::alerts::{run, seeded_with_smtp};
use crate::support::quota::add_new_events_to_periods;
use crate::support::webhooks::{Receiver, SECRET_A, seed_webhook_users, webhook_settings};
use usage_worker::jobs::JobKind;

use crate::support::{TestDb, report_lines, text};

/// One credit alert as recorded: (organization or 0, recipient, alert, threshold, status).
#[derive(QueryableByName, Debug, PartialEq)]
struct Credit {
    #[diesel(sql_type = BigInt)]
    org_id: i64,
    #[diesel(sql_type = BigInt)]
    user_id: i64,
    #[diesel(sql_type = Text)]
    alert: String,
    #[diesel(sql_type = Int2)]
    threshold: i16,
    #[diesel(sql_type = Text)]
    status: String,
}

fn credits(db: &TestDb) -> Vec<(i64, i64, String, i16, String)> {
    diesel::sql_query(
        "SELECT org_id, user_id, alert, threshold, status FROM quota_alerts
          WHERE alert <> 'quota' ORDER BY id",
    )
    .load::<Credit>(&mut db.conn())
    .unwrap()
    .into_iter()
    .map(|c| (c.org_id, c.user_id, c.alert, c.threshold, c.status))
    .collect()
}

fn credit(
    org: i64,
    user: i64,
    alert: &str,
    threshold: i16,
    status: &str,
) -> (i64, i64, String, i16, String) {
    (org, user, alert.to_string(), threshold, status.to_string())
}

/// `who` (`p_user_id => 1`) spends `tokens` at `at`, and aggregate counts it.
fn spend(db: &TestDb, who: (i64, &str), tokens: i64, at: &str) {
    db.execute(&format!(
        "INSERT INTO usage_events (user_id, org_id, kind, tokens, created_at)
         VALUES ({}, {}, 'ai_response', {tokens}, '{at}')",
        who.0, who.1
    ));
    add_new_events_to_periods(&mut db.conn());
}

fn grant(db: &TestDb, who: &str, amount: i64, starts: &str) -> i64 {
    db.count(&format!(
        "SELECT usage_grant({who}, p_metric => 'tokens', p_amount => {amount},
                           p_starts_at => '{starts}', p_expires_at => '2027-01-01T00:00:00Z') AS n"
    ))
}

#[test]
fn low_depleted_and_recovered_are_each_emailed_once_per_crossing() {
    let (db, server, ctx) = seeded_with_smtp();
    // Ada (Berlin) is on 1,000 tokens a month and bought 500 more for November and December.
    let first = grant(&db, "p_user_id => 1", 500, "2026-11-01T00:00:00Z");
    spend(&db, (1, "NULL"), 1_450, "2026-11-10T09:00:00Z");
    // The dry run names the credit alert for what it is, and records nothing.
    let preview = db
        .dry_run_job(JobKind::Alerts, "2026-11-10T12:00:00Z")
        .unwrap();
    assert!(
        report_lines(&preview).iter().any(|l| l.contains(
            "user 1 a***@example.com: would email: credit.low on monthly tokens: grants gave 450 tokens of 500 tokens"
        )),
        "{:?}",
        report_lines(&preview)
    );
    assert!(credits(&db).is_empty());
    run(&db, &ctx, "2026-11-10T12:00:00Z");
    run(&db, &ctx, "2026-11-10T12:05:00Z");
    let low = credit(0, 1, "credit.low", 20, "sent");
    assert_eq!(credits(&db), vec![low.clone()], "50 of 500 left: low, once");

    spend(&db, (1, "NULL"), 100, "2026-11-11T09:00:00Z");
    run(&db, &ctx, "2026-11-11T12:00:00Z");
    run(&db, &ctx, "2026-11-11T12:05:00Z");
    let depleted = credit(0, 1, "credit.depleted", 100, "sent");
    assert_eq!(credits(&db), vec![low.clone(), depleted.clone()]);

    // A new grant lifts the balance: recovered, once; 1,000 of 1,000 left is not low.
    let second = grant(&db, "p_user_id => 1", 1_000, "2026-11-12T00:00:00Z");
    // An aggregate run with no new event records what the new grant gives.
    add_new_events_to_periods(&mut db.conn());
    run(&db, &ctx, "2026-11-12T12:00:00Z");
    run(&db, &ctx, "2026-11-12T12:05:00Z");
    let recovered = credit(0, 1, "credit.recovered", 100, "sent");
    assert_eq!(credits(&db), vec![low, depleted, recovered]);

    let credit_mail: Vec<_> = server
        .received()
        .into_iter()
        .filter(|m| m.message_id().contains("credit-alert"))
        .collect();
    let ids: Vec<String> = credit_mail.iter().map(|m| m.message_id()).collect();
    assert_eq!(
        ids,
        vec![
            format!("<credit-alert.1.tokens.month.all.low.{first}@example.com>"),
            format!("<credit-alert.1.tokens.month.all.depleted.{first}@example.com>"),
            format!("<credit-alert.1.tokens.month.all.recovered.{second}@example.com>"),
        ]
    );
    let subjects: Vec<String> = credit_mail
        .iter()
        .map(|m| m.header("Subject").unwrap_or_default())
        .collect();
    assert_eq!(
        subjects,
        vec![
            "10% of your extra token credit left",
            "Your extra token credit is used up",
            "Your extra token credit is available again",
        ]
    );
    assert!(
        credit_mail[0].data.contains("50 tokens left (10%)"),
        "{}",
        credit_mail[0].data
    );
}

#[test]
fn an_organizations_jump_to_zero_emails_its_owners_and_admins_depleted_only() {
    let (db, server, ctx) = seeded_with_smtp();
    // Acme (New York): Ada owner, Bob admin, Cy member, Dee admin with her alerts off.
    grant(&db, "p_org_id => 7", 300, "2026-11-01T05:00:00Z");
    spend(&db, (3, "7"), 1_400, "2026-11-10T15:00:00Z");
    run(&db, &ctx, "2026-11-10T18:00:00Z");
    run(&db, &ctx, "2026-11-10T18:05:00Z");
    let mut got = credits(&db);
    got.sort();
    assert_eq!(
        got,
        vec![
            credit(7, 1, "credit.depleted", 100, "sent"),
            credit(7, 1, "credit.low", 20, "superseded"),
            credit(7, 2, "credit.depleted", 100, "sent"),
            credit(7, 2, "credit.low", 20, "superseded"),
            credit(7, 4, "credit.depleted", 100, "suppressed"),
            credit(7, 4, "credit.low", 20, "suppressed"),
        ]
    );
    let mut to: Vec<String> = server
        .received()
        .into_iter()
        .filter(|m| m.message_id().contains("credit-alert"))
        .map(|m| m.rcpt.join(","))
        .collect();
    to.sort();
    assert_eq!(to, vec!["ada@example.com", "bob@example.com"]);
    let subject = text(
        &mut db.conn(),
        "SELECT count(*)::text AS t FROM quota_alerts WHERE alert = 'credit.depleted' AND message_id LIKE 'org-credit-alert.7.%'",
    );
    assert_eq!(subject, "2");
}

#[test]
fn a_credit_alert_is_one_verified_webhook_with_the_balance() {
    let db = TestDb::new();
    seed_webhook_users(&db);
    let receiver = Receiver::start(&[SECRET_A], &[]);
    let ctx = db.ctx_with(|s| {
        webhook_settings(
            s,
            vec![receiver.endpoint(&[SECRET_A], std::time::Duration::from_secs(5))],
        )
    });
    let id = grant(&db, "p_user_id => 1", 500, "2026-11-01T00:00:00Z");
    spend(&db, (1, "NULL"), 1_420, "2026-11-10T09:00:00Z");
    run(&db, &ctx, "2026-11-10T12:00:00Z");
    run(&db, &ctx, "2026-11-10T12:05:00Z");
    let credit_events: Vec<_> = receiver
        .accepted()
        .into_iter()
        .filter(|r| r.body["type"].as_str().unwrap_or("").starts_with("credit."))
        .collect();
    assert_eq!(credit_events.len(), 1, "{credit_events:?}");
    let event = &credit_events[0];
    assert!(event.verified);
    assert_eq!(event.body["type"], "credit.low");
    assert_eq!(event.body["data"]["grant_id"], id);
    assert_eq!(event.body["data"]["granted"], "500");
    assert_eq!(event.body["data"]["used"], "420");
    assert_eq!(event.body["data"]["balance"], "80");
    assert_eq!(
        event.body["data"]["subject"],
        serde_json::json!({"type": "user", "id": 1})
    );
}
