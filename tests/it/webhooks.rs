//! Alerts as Standard Webhooks: every request is verified by the `standardwebhooks` Python
//! package in a real HTTP receiver (see support/webhooks.rs).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Int4, Nullable, Text};
use usage_worker::config::{Settings, WebhookEndpoint};
use usage_worker::jobs::{Ctx, JobKind, JobReport, RunOpts};
use usage_worker::mail::webhook::{
    PostError, WebhookMessage, WebhookTarget, WebhookTransport, http_transport,
};
use usage_worker::mail::{self, MemoryMailer};

use crate::support::webhooks::{
    Receiver, SECRET_A, SECRET_B, seed_webhook_users, set_november_tokens, webhook_settings,
};
use crate::support::{self, TestDb, at};

const SECOND: Duration = Duration::from_secs(1);

fn ctx(db: &TestDb, endpoints: Vec<WebhookEndpoint>) -> Arc<Ctx> {
    db.ctx_with(|s| webhook_settings(s, endpoints))
}

/// Seeds the webhook users and starts a receiver knowing `SECRET_A`; the settings deliver to it.
fn one_receiver(db: &TestDb) -> (Receiver, Settings) {
    seed_webhook_users(db);
    let receiver = Receiver::start(&[SECRET_A], &[]);
    let mut settings = db.settings();
    webhook_settings(
        &mut settings,
        vec![receiver.endpoint(&[SECRET_A], 5 * SECOND)],
    );
    (receiver, settings)
}

fn run(db: &TestDb, ctx: &Ctx, now: &str) -> JobReport {
    JobKind::Alerts
        .run(ctx, &mut db.conn(), at(now), &RunOpts::default())
        .unwrap()
}

#[derive(QueryableByName, Debug)]
struct Delivery {
    #[diesel(sql_type = BigInt)]
    user_id: i64,
    #[diesel(sql_type = Text)]
    webhook_id: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Int4)]
    attempts: i32,
    #[diesel(sql_type = Nullable<Text>)]
    error_class: Option<String>,
}

fn deliveries(db: &TestDb) -> Vec<Delivery> {
    diesel::sql_query(
        "SELECT a.user_id, d.webhook_id, d.status, d.attempts, d.error_class
           FROM webhook_deliveries d JOIN quota_alerts a ON a.id = d.alert_id
          ORDER BY d.id",
    )
    .load(&mut db.conn())
    .unwrap()
}

fn types(requests: &[support::webhooks::Request]) -> Vec<(String, i64)> {
    requests
        .iter()
        .map(|r| {
            let t = r.body["type"].as_str().unwrap_or_default().to_string();
            (t, r.body["data"]["threshold"].as_i64().unwrap_or(0))
        })
        .collect()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[test]
fn thresholds_80_95_and_100_on_separate_runs_deliver_three_verified_events_each_once() {
    let db = TestDb::new();
    let (receiver, settings) = one_receiver(&db);
    let mailer = Arc::new(MemoryMailer::new());
    let ctx = Ctx::with_mailer(Arc::new(settings), db.url.clone(), mailer.clone());

    for (tokens, now) in [
        (820, "2026-11-10T12:00:00Z"),
        (960, "2026-11-12T08:00:00Z"),
        (1000, "2026-11-14T08:00:00Z"),
    ] {
        set_november_tokens(&db, 1, tokens);
        run(&db, &ctx, now);
        run(&db, &ctx, now);
    }
    run(&db, &ctx, "2026-11-20T08:00:00Z");

    let requests = receiver.requests();
    assert!(requests.iter().all(|r| r.verified), "{requests:?}");
    assert_eq!(
        types(&requests),
        vec![
            ("quota.threshold".to_string(), 80),
            ("quota.threshold".to_string(), 95),
            ("quota.exhausted".to_string(), 100)
        ]
    );
    let ids: Vec<&str> = requests.iter().map(|r| r.id.as_str()).collect();
    assert!(ids.iter().all(|id| id.starts_with("msg_")), "{ids:?}");
    assert_eq!(
        ids.iter().collect::<std::collections::BTreeSet<_>>().len(),
        3
    );
    // The signing time is the real time of the attempt, not the job's instant.
    assert!(
        requests
            .iter()
            .all(|r| (r.timestamp - unix_now()).abs() < 120)
    );
    let data = &requests[0].body["data"];
    assert_eq!(
        data["subject"],
        serde_json::json!({"type": "user", "id": 1})
    );
    assert_eq!(data["used"], "820");
    assert_eq!(data["limit"], "1000");
    assert_eq!(data["period_start"], "2026-11-01T00:00:00Z");
    assert_eq!(data["resets_at"], "2026-12-01T01:00:00+01:00");
    assert_eq!(data["timezone"], "Europe/Berlin");
    assert_eq!(requests[0].body["timestamp"], "2026-11-10T12:00:00Z");
    let subjects: Vec<String> = mailer.sent().into_iter().map(|m| m.subject).collect();
    assert_eq!(
        subjects.last().map(String::as_str),
        Some("You have used all of your monthly token quota")
    );
}

#[test]
fn a_delivery_answered_500_twice_is_retried_with_the_same_webhook_id_until_accepted() {
    let db = TestDb::new();
    seed_webhook_users(&db);
    let receiver = Receiver::start(&[SECRET_A], &["500", "500"]);
    let ctx = ctx(&db, vec![receiver.endpoint(&[SECRET_A], 5 * SECOND)]);
    set_november_tokens(&db, 1, 850);

    run(&db, &ctx, "2026-11-10T12:00:00Z");
    // The backoff (60 s, then 120 s) holds: nothing is tried before it runs out.
    run(&db, &ctx, "2026-11-10T12:00:30Z");
    assert_eq!(receiver.requests().len(), 1);
    run(&db, &ctx, "2026-11-10T12:01:00Z");
    run(&db, &ctx, "2026-11-10T12:03:00Z");
    run(&db, &ctx, "2026-11-10T12:10:00Z");

    let requests = receiver.requests();
    let answered: Vec<&str> = requests.iter().map(|r| r.answered.as_str()).collect();
    assert_eq!(answered, vec!["500", "500", "200"]);
    assert!(
        requests
            .iter()
            .all(|r| r.verified && r.id == requests[0].id)
    );
    assert_eq!(receiver.accepted().len(), 1);
    let rows = deliveries(&db);
    assert_eq!(
        (rows[0].status.as_str(), rows[0].attempts),
        ("delivered", 3)
    );
    assert_eq!(rows[0].webhook_id, requests[0].id);

    let sample = usage_worker::metrics::sample_database(&mut db.conn()).unwrap();
    let text = usage_worker::metrics::Metrics::new().render(Some(&sample), true, None);
    assert!(
        text.contains(
            "usage_worker_webhook_deliveries{host=\"127.0.0.1\",status=\"delivered\",class=\"none\"} 1"
        ),
        "{text}"
    );
}

/// Posts through the real transport, then dies before the job can record the answers.
struct CrashAfterPost(Arc<dyn WebhookTransport>);

impl WebhookTransport for CrashAfterPost {
    fn post_all(
        &self,
        target: &WebhookTarget,
        messages: &[WebhookMessage],
    ) -> Vec<Result<u16, PostError>> {
        let results = self.0.post_all(target, messages);
        assert!(results.iter().all(Result::is_ok));
        panic!("simulated crash between the HTTP response and the commit");
    }
}

#[test]
fn a_crash_between_the_response_and_the_commit_resends_with_the_same_webhook_id() {
    let db = TestDb::new();
    let (receiver, settings) = one_receiver(&db);
    let mut crashing = Ctx::with_mailer(
        Arc::new(settings.clone()),
        db.url.clone(),
        mail::from_settings(&settings.mail),
    );
    crashing.webhooks = Arc::new(CrashAfterPost(http_transport()));
    set_november_tokens(&db, 1, 900);

    let crashed = std::panic::catch_unwind(AssertUnwindSafe(|| {
        run(&db, &crashing, "2026-11-10T12:00:00Z");
    }));
    assert!(crashed.is_err());
    assert_eq!(deliveries(&db)[0].status, "sending");

    let ctx = ctx(&db, settings.alerts.webhooks.clone());
    // The crashed run's lease (15 minutes) still holds: nothing is sent twice yet.
    run(&db, &ctx, "2026-11-10T12:05:00Z");
    assert_eq!(receiver.requests().len(), 1);
    run(&db, &ctx, "2026-11-10T12:20:00Z");
    run(&db, &ctx, "2026-11-10T12:25:00Z");

    let accepted = receiver.accepted();
    assert_eq!(accepted.len(), 2);
    assert_eq!(accepted[0].id, accepted[1].id);
    assert_eq!(deliveries(&db)[0].status, "delivered");
}

#[test]
fn a_410_disables_the_endpoint_until_its_configuration_changes() {
    let db = TestDb::new();
    seed_webhook_users(&db);
    let receiver = Receiver::start(&[SECRET_A, SECRET_B], &["410"]);
    let ctx = ctx(&db, vec![receiver.endpoint(&[SECRET_A], 5 * SECOND)]);

    set_november_tokens(&db, 1, 850);
    let report = run(&db, &ctx, "2026-11-10T12:00:00Z");
    assert_eq!(report.details["webhooks"]["disabled"][0], "127.0.0.1");
    set_november_tokens(&db, 2, 600);
    run(&db, &ctx, "2026-11-10T13:00:00Z");
    run(&db, &ctx, "2026-11-10T14:00:00Z");
    assert_eq!(receiver.requests().len(), 1);
    let rows = deliveries(&db);
    assert_eq!(rows[0].status, "failed");
    assert_eq!(rows[0].error_class.as_deref(), Some("gone"));
    assert_eq!((rows[1].user_id, rows[1].status.as_str()), (2, "pending"));
    assert_eq!(
        db.count("SELECT count(*) AS n FROM webhook_endpoints WHERE disabled_at IS NOT NULL"),
        1
    );

    // A new secret is a new configuration: the endpoint is called again.
    let rotated = ctx_for_secrets(&db, &receiver, &[SECRET_B]);
    run(&db, &rotated, "2026-11-10T15:00:00Z");
    assert_eq!(
        types(&receiver.accepted()),
        vec![("quota.threshold".to_string(), 50)]
    );
    assert_eq!(deliveries(&db)[1].status, "delivered");
}

fn ctx_for_secrets(db: &TestDb, receiver: &Receiver, secrets: &[&str]) -> Arc<Ctx> {
    ctx(db, vec![receiver.endpoint(secrets, 5 * SECOND)])
}

#[test]
fn a_400_fails_that_delivery_for_good() {
    let db = TestDb::new();
    seed_webhook_users(&db);
    let receiver = Receiver::start(&[SECRET_A], &["400"]);
    let ctx = ctx_for_secrets(&db, &receiver, &[SECRET_A]);
    set_november_tokens(&db, 1, 850);

    run(&db, &ctx, "2026-11-10T12:00:00Z");
    run(&db, &ctx, "2026-11-10T14:00:00Z");

    assert_eq!(receiver.requests().len(), 1);
    let rows = deliveries(&db);
    assert_eq!((rows[0].status.as_str(), rows[0].attempts), ("failed", 1));
    assert_eq!(rows[0].error_class.as_deref(), Some("rejected"));
}

#[test]
fn a_hanging_endpoint_times_out_without_delaying_the_email_or_another_endpoint() {
    let db = TestDb::new();
    seed_webhook_users(&db);
    let hanging = Receiver::start(&[SECRET_A], &["hang"]);
    let healthy = Receiver::start(&[SECRET_A], &[]);
    let timeout = 6 * SECOND;
    let mut settings = db.settings();
    webhook_settings(
        &mut settings,
        vec![
            hanging.endpoint(&[SECRET_A], timeout),
            healthy.endpoint(&[SECRET_A], timeout),
        ],
    );
    let mailer = Arc::new(MemoryMailer::new());
    let ctx = Ctx::with_mailer(Arc::new(settings), db.url.clone(), mailer.clone());
    set_november_tokens(&db, 1, 850);

    let started = Instant::now();
    let job = {
        let url = db.url.clone();
        std::thread::spawn(move || {
            let mut conn = support::connect(&url);
            JobKind::Alerts
                .run(
                    &ctx,
                    &mut conn,
                    at("2026-11-10T12:00:00Z"),
                    &RunOpts::default(),
                )
                .unwrap()
        })
    };
    let delivered_elsewhere = support::wait_until(timeout, || {
        mailer.sent().len() == 1 && healthy.accepted().len() == 1
    });
    assert!(
        delivered_elsewhere,
        "the email or the healthy endpoint waited"
    );
    assert!(!job.is_finished(), "the hanging endpoint did not hang");
    job.join().unwrap();
    assert!(started.elapsed() >= timeout);

    let rows = deliveries(&db);
    let hung: Vec<&Delivery> = rows.iter().filter(|d| d.status != "delivered").collect();
    assert_eq!(hung.len(), 1);
    assert_eq!(hung[0].status, "pending");
    assert_eq!(hung[0].error_class.as_deref(), Some("timeout"));
}

#[test]
fn with_two_secrets_a_receiver_knowing_either_one_verifies_and_one_knowing_neither_refuses() {
    let db = TestDb::new();
    seed_webhook_users(&db);
    let knows_a = Receiver::start(&[SECRET_A], &[]);
    let knows_b = Receiver::start(&[SECRET_B], &[]);
    let knows_neither = Receiver::start(&["whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"], &[]);
    let ctx = ctx(
        &db,
        [&knows_a, &knows_b, &knows_neither]
            .iter()
            .map(|r| r.endpoint(&[SECRET_A, SECRET_B], 5 * SECOND))
            .collect(),
    );
    set_november_tokens(&db, 1, 850);

    run(&db, &ctx, "2026-11-10T12:00:00Z");

    assert_eq!(knows_a.accepted().len(), 1);
    assert_eq!(knows_b.accepted().len(), 1);
    assert_eq!(knows_a.accepted()[0].signature.split(' ').count(), 2);
    let refused = knows_neither.requests();
    assert_eq!(refused.len(), 1);
    assert!(!refused[0].verified);
    assert_eq!(refused[0].answered, "401");
}

#[test]
fn a_plan_with_thresholds_50_and_100_alerts_at_50_and_100_only() {
    let db = TestDb::new();
    seed_webhook_users(&db);
    let receiver = Receiver::start(&[SECRET_A], &[]);
    let ctx = ctx_for_secrets(&db, &receiver, &[SECRET_A]);

    for (tokens, now) in [
        (550, "2026-11-10T12:00:00Z"),
        (990, "2026-11-11T12:00:00Z"),
        (1200, "2026-11-12T12:00:00Z"),
    ] {
        set_november_tokens(&db, 2, tokens);
        run(&db, &ctx, now);
    }

    assert_eq!(
        types(&receiver.accepted()),
        vec![
            ("quota.threshold".to_string(), 50),
            ("quota.exhausted".to_string(), 100)
        ]
    );
    assert_eq!(db.count("SELECT count(*) AS n FROM quota_alerts"), 2);
}

#[test]
fn a_jump_past_the_limit_with_thresholds_80_and_95_is_sent_once_as_quota_exhausted() {
    let db = TestDb::new();
    seed_webhook_users(&db);
    let receiver = Receiver::start(&[SECRET_A], &[]);
    let endpoint = receiver.endpoint(&[SECRET_A], 5 * SECOND);
    let ctx = db.ctx_with(|s| {
        webhook_settings(s, vec![endpoint]);
        s.alerts.thresholds = Settings::default().alerts.thresholds;
    });
    set_november_tokens(&db, 1, 1010);

    run(&db, &ctx, "2026-11-10T12:00:00Z");
    run(&db, &ctx, "2026-11-10T12:05:00Z");

    assert_eq!(
        types(&receiver.accepted()),
        vec![("quota.exhausted".to_string(), 95)]
    );
}

#[test]
fn plan_thresholds_outside_1_to_100_are_refused_by_the_schema() {
    let db = TestDb::new();
    for bad in ["{0}", "{101}", "{50,NULL}", "{}"] {
        let error = db
            .conn()
            .batch_execute(&format!(
                "INSERT INTO plans (name, alert_thresholds) VALUES ('p', '{bad}')"
            ))
            .expect_err(bad)
            .to_string();
        assert!(
            error.contains("plans_alert_thresholds_check"),
            "{bad}: {error}"
        );
    }
}

/// The binary with a config file naming the receiver: the logs of a run that delivers and
/// one that fails, `--dry-run`, `--status` and `--check-config` show no secret, no token in
/// the URL and no full email address.
#[test]
fn no_secret_token_or_full_email_address_reaches_any_output() {
    let db = TestDb::new();
    seed_webhook_users(&db);
    set_november_tokens(&db, 1, 850);
    set_november_tokens(&db, 2, 600);
    let receiver = Receiver::start(&[SECRET_A], &["500"]);
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("webhook-secret");
    std::fs::write(&secret_file, format!("{SECRET_B}\n")).unwrap();
    let config = support::config_file(
        dir.path(),
        &format!(
            "[database]\nurl = \"{}\"\n[mail]\ntransport = \"log\"\n\
             [[alerts.webhooks]]\nurl = \"{}\"\nsecret = \"{SECRET_A}\"\nsecret_files = [\"{}\"]\n",
            db.url,
            receiver.url(),
            secret_file.display()
        ),
    );
    let invoke = |args: &[&str]| {
        let mut command = support::binary();
        command.arg("--config").arg(&config).args(args);
        let out = support::output(command);
        format!("{}\n{}", out.stdout, out.stderr)
    };
    let dry = invoke(&[
        "--run",
        "alerts",
        "--at",
        "2026-11-10T12:00:00Z",
        "--dry-run",
    ]);
    assert!(
        dry.contains("webhook to 127.0.0.1: would send quota.threshold for user 1"),
        "{dry}"
    );
    let mut all = dry;
    for at in ["2026-11-10T12:00:00Z", "2026-11-10T12:10:00Z"] {
        all.push_str(&invoke(&["--run", "alerts", "--at", at]));
    }
    let status = invoke(&["--status"]);
    assert!(
        status.contains("webhooks to 127.0.0.1: delivered 2"),
        "{status}"
    );
    all.push_str(&status);
    all.push_str(&invoke(&["--check-config"]));

    assert_eq!(receiver.accepted().len(), 2);
    assert!(all.contains("quota alert webhook not delivered"), "{all}");
    for secret in [SECRET_A, SECRET_B] {
        let key = secret.trim_start_matches("whsec_");
        assert!(!all.contains(&key[..16]), "a secret leaked:\n{all}");
    }
    assert!(!all.contains("t0ps3cret"), "the URL's token leaked:\n{all}");
    for address in ["ada@example.com", "bob@example.com"] {
        assert!(!all.contains(address), "{address} leaked:\n{all}");
    }
}

/// The receiver is only a check if it refuses what the specification refuses: a request
/// signed five minutes or more away from now, or with a wrong key.
#[test]
fn the_receiver_refuses_stale_future_and_wrongly_signed_requests() {
    let receiver = Receiver::start(&[SECRET_A], &[]);
    let right = [usage_worker::config::decode_secret(SECRET_A).unwrap()];
    let wrong = [usage_worker::config::decode_secret(SECRET_B).unwrap()];
    let body = r#"{"type":"quota.threshold"}"#;
    let post = |timestamp: i64, keys: &[usage_worker::config::SecretBytes]| {
        let signature = usage_worker::mail::webhook::sign("msg_1", timestamp, body, keys);
        ureq::post(receiver.url())
            .config()
            .http_status_as_error(false)
            .build()
            .header("webhook-id", "msg_1")
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .send(body)
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(post(unix_now(), &right), 200);
    assert_eq!(post(unix_now() - 600, &right), 401);
    assert_eq!(post(unix_now() + 600, &right), 401);
    assert_eq!(post(unix_now(), &wrong), 401);
}
