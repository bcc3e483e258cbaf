//! What the books show can be trusted: a rebuild never replaces summary rows whose raw
//! events retention deleted, every alert has a Message-ID of its own, and a reset instant is
//! shown in the zone the period was counted in, however PostgreSQL spelled that zone.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Text, Timestamptz};
use usage_worker::jobs::{Ctx, JobKind, JobReport, RunOpts};
use usage_worker::ledger::Trigger;
use usage_worker::mail::MemoryMailer;
use usage_worker::quota_report;
use usage_worker::scheduler::{self, RunOutcome, RunRequest};

use crate::support::books::summary_tokens;
use crate::support::quota::month_tokens;
use crate::support::{TestDb, at};

const NOW: &str = "2026-11-23T10:00:00Z";
/// `retention.events_months` = 24 at NOW.
const CUTOFF: &str = "2024-11-23T10:00:00Z";

fn rebuild(ctx: &Ctx, db: &TestDb, from: &str, to: &str) -> Result<JobReport, String> {
    let opts = RunOpts {
        from: Some(from.parse().unwrap()),
        to: Some(to.parse().unwrap()),
        ..RunOpts::default()
    };
    JobKind::Aggregate
        .run(ctx, &mut db.conn(), at(NOW), &opts)
        .map_err(|e| e.to_string())
}

/// Summaries kept three years, raw events two (the defaults but for the summary).
fn long_summaries(db: &TestDb) -> Arc<Ctx> {
    db.ctx_with(|s| s.retention.token_usage_daily_months = 36.try_into().unwrap())
}

/// User 1 counts in UTC, user 2 in Honolulu (UTC-10), whose local 2024-11-23 begins exactly
/// at the cutoff. Events long before, around and after the cutoff, all aggregated, then
/// retention run at NOW.
fn books_trimmed_by_retention(db: &TestDb, ctx: &Ctx) {
    db.execute(
        "INSERT INTO users (id, email, timezone) VALUES (1, 'a@example.com', 'UTC'),
                                                        (2, 'h@example.com', 'Pacific/Honolulu');
         INSERT INTO usage_events (user_id, kind, tokens, created_at) VALUES
             (1, 'ai_response', 100, '2024-10-05T12:00:00Z'),
             (1, 'ai_response', 10, '2024-11-23T08:00:00Z'),
             (1, 'ai_response', 20, '2024-11-23T12:00:00Z'),
             (2, 'ai_response', 30, '2024-11-23T12:00:00Z'),
             (1, 'ai_response', 40, '2026-11-20T12:00:00Z')",
    );
    JobKind::Aggregate
        .run(ctx, &mut db.conn(), at(NOW), &RunOpts::default())
        .unwrap();
    JobKind::Retention
        .run(ctx, &mut db.conn(), at(NOW), &RunOpts::default())
        .unwrap();
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) AS n FROM usage_events WHERE created_at < '{CUTOFF}'"
        )),
        0,
        "retention deletes the events before the cutoff"
    );
    assert_eq!(summary_tokens(db, 1, None, "2024-10-05"), 100);
    assert_eq!(summary_tokens(db, 1, None, "2024-11-23"), 30);
}

#[test]
fn a_rebuild_skips_and_reports_the_days_whose_raw_events_retention_deleted() {
    let db = TestDb::alone();
    let ctx = long_summaries(&db);
    books_trimmed_by_retention(&db, &ctx);
    // A tampered row on a day retention left whole, to see that the rest is still rebuilt.
    db.execute("UPDATE token_usage_daily SET tokens = 1 WHERE user_id = 2 AND day = '2024-11-23'");

    let report = rebuild(&ctx, &db, "2024-10-01", "2024-11-30").unwrap();

    assert_eq!(
        summary_tokens(&db, 1, None, "2024-10-05"),
        100,
        "{report:?}"
    );
    // UTC's 2024-11-23 began before the cutoff: part of it is gone, so its row stays.
    assert_eq!(summary_tokens(&db, 1, None, "2024-11-23"), 30, "{report:?}");
    // Honolulu's 2024-11-23 began at the cutoff: whole, so it is rebuilt.
    assert_eq!(summary_tokens(&db, 2, None, "2024-11-23"), 30, "{report:?}");
    let skipped = &report.details["skipped"];
    assert_eq!(skipped["from"], "2024-10-01", "{report:?}");
    assert_eq!(skipped["to"], "2024-11-22", "{report:?}");
    assert_eq!(skipped["days"], 53, "{report:?}");
    assert_eq!(
        skipped["events_kept_from"]
            .as_str()
            .map(|s| s.parse::<DateTime<Utc>>().unwrap()),
        Some(at(CUTOFF)),
        "{report:?}"
    );
    let partial = skipped["partial_days"].as_array().unwrap();
    assert!(
        partial
            .iter()
            .any(|d| d["day"] == "2024-11-23" && d["user_ids"] == serde_json::json!([1])),
        "{report:?}"
    );
    assert!(
        !partial.iter().any(|d| d["user_ids"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(2))),
        "{report:?}"
    );
    assert!(
        report.summary.contains("skipped 2024-10-01..2024-11-22")
            && report.summary.contains("retention.events_months"),
        "{}",
        report.summary
    );
    assert_eq!(report.details["rows_differing"], 1, "{report:?}");
}

#[test]
fn a_rebuild_wholly_before_the_retention_cutoff_is_refused_and_changes_nothing() {
    let db = TestDb::alone();
    let ctx = long_summaries(&db);
    books_trimmed_by_retention(&db, &ctx);

    let error = rebuild(&ctx, &db, "2024-10-01", "2024-10-31").unwrap_err();

    assert_eq!(summary_tokens(&db, 1, None, "2024-10-05"), 100);
    assert!(
        error.contains("2024-10-01..2024-10-31")
            && error.contains("retention.events_months")
            && error.contains("2024-11-25"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_respects_what_an_earlier_retention_with_a_shorter_setting_deleted() {
    let db = TestDb::alone();
    let ctx = long_summaries(&db);
    db.execute(
        "INSERT INTO users (id, email, timezone) VALUES (1, 'a@example.com', 'UTC');
         INSERT INTO usage_events (user_id, kind, tokens, created_at)
         VALUES (1, 'ai_response', 70, '2025-06-15T12:00:00Z')",
    );
    JobKind::Aggregate
        .run(&ctx, &mut db.conn(), at(NOW), &RunOpts::default())
        .unwrap();
    // Retention ran with 12 months of events (cutoff 2025-11-23), recorded in the ledger; the
    // setting is back at 24 months now.
    let twelve_months = db.ctx_with(|s| {
        s.retention.events_months = 12.try_into().unwrap();
        s.retention.token_usage_daily_months = 36.try_into().unwrap();
    });
    let request = RunRequest {
        kind: JobKind::Retention,
        trigger: Trigger::Manual,
        scheduled_for: at(NOW),
        at: Some(at(NOW)),
        opts: RunOpts::default(),
        timeout: Duration::from_secs(60),
    };
    let outcome = scheduler::execute(
        twelve_months,
        usage_worker::ledger::Identity::current(),
        request,
    )
    .await
    .unwrap();
    assert!(
        matches!(outcome, RunOutcome::Succeeded { .. }),
        "{outcome:?}"
    );
    assert_eq!(summary_tokens(&db, 1, None, "2025-06-15"), 70);

    let result = tokio::task::spawn_blocking(move || {
        rebuild(&ctx, &db, "2025-06-01", "2025-06-30").map(|_| db)
    })
    .await
    .unwrap();
    let error = result.err().unwrap_or_default();
    assert!(
        error.contains("2025-11-23") && error.contains("retention run"),
        "{error}"
    );
}

// --- Message-IDs -----------------------------------------------------------------------

/// User 1 (UTC) on a plan limiting tokens per month over all kinds and for the event kind
/// literally named `all`, with 90 % of both used.
fn alerts_for_kind_all_and_every_kind(db: &TestDb) {
    db.execute(
        "INSERT INTO plans (id, name) VALUES (1, 'free');
         INSERT INTO plan_limits (plan_id, metric, period, kind, max_value) VALUES
             (1, 'tokens', 'month', '', 1000), (1, 'tokens', 'month', 'all', 1000);
         INSERT INTO users (id, email, name, timezone, plan_id)
         VALUES (1, 'ada@example.com', 'Ada', 'UTC', 1);
         INSERT INTO usage_periods (user_id, period, period_start, period_end, tokens)
         VALUES (1, 'month', '2026-11-01T00:00:00Z', '2026-12-01T00:00:00Z', 900);
         INSERT INTO usage_period_kind_totals (user_id, period, period_start, kind, tokens)
         VALUES (1, 'month', '2026-11-01T00:00:00Z', 'all', 900);",
    );
}

#[test]
fn the_alert_for_every_kind_and_the_alert_for_the_kind_named_all_have_different_message_ids() {
    let db = TestDb::new();
    alerts_for_kind_all_and_every_kind(&db);
    let memory = Arc::new(MemoryMailer::new());
    let ctx = Ctx::with_mailer(Arc::new(db.settings()), db.url.clone(), memory.clone());
    JobKind::Alerts
        .run(
            &ctx,
            &mut db.conn(),
            at("2026-11-10T12:00:00Z"),
            &RunOpts::default(),
        )
        .unwrap();

    let sent = memory.sent();
    assert_eq!(sent.len(), 2, "{sent:?}");
    let ids: BTreeSet<&str> = sent.iter().map(|e| e.message_id.as_str()).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    // An alert over every kind keeps the ID it has always had (alerts in flight keep theirs).
    assert!(
        ids.iter()
            .any(|id| id.starts_with("quota-alert.1.tokens.month.all.20261101T000000Z.80@")),
        "{ids:?}"
    );
    assert_eq!(
        db.count("SELECT count(DISTINCT message_id) AS n FROM quota_alerts WHERE status = 'sent'"),
        2
    );
}

// --- Zones PostgreSQL accepts and chrono-tz does not ------------------------------------

/// User 1 in `europe/berlin`, user 2 in the POSIX zone `UTC+3` (three hours *west* of UTC,
/// as PostgreSQL reads it), both 90 % into a monthly token limit in the period
/// `usage_period_bounds` gives them at `now`.
fn users_in_zones_chrono_tz_cannot_parse(db: &TestDb, now: &str) {
    db.execute(&format!(
        "INSERT INTO plans (id, name) VALUES (1, 'free');
         INSERT INTO plan_limits (plan_id, metric, period, kind, max_value)
         VALUES (1, 'tokens', 'month', '', 1000);
         INSERT INTO users (id, email, name, timezone, plan_id)
         VALUES (1, 'ada@example.com', 'Ada', 'europe/berlin', 1),
                (2, 'bob@example.com', 'Bob', 'UTC+3', 1);
         INSERT INTO usage_periods (user_id, period, period_start, period_end, tokens)
         SELECT u.id, 'month', b.period_start, b.period_end, 900
           FROM users u, usage_period_bounds(u.timezone, NULL, 'month', '{now}') b;"
    ));
}

/// The local wall-clock time of `instant` in `zone`, as PostgreSQL computes it.
fn local_in_postgres(db: &TestDb, instant: DateTime<Utc>, zone: &str) -> String {
    #[derive(QueryableByName)]
    struct Local {
        #[diesel(sql_type = Text)]
        local: String,
    }
    diesel::sql_query("SELECT to_char($1 AT TIME ZONE $2, 'YYYY-MM-DD\"T\"HH24:MI:SS') AS local")
        .bind::<Timestamptz, _>(instant)
        .bind::<Text, _>(zone)
        .get_result::<Local>(&mut db.conn())
        .unwrap()
        .local
}

#[test]
fn usage_json_shows_the_reset_in_the_zone_postgresql_counted_the_period_in() {
    let db = TestDb::new();
    let now = "2026-11-23T10:00:00Z";
    users_in_zones_chrono_tz_cannot_parse(&db, now);
    for (user, zone, resets_local) in [
        (1, "europe/berlin", "2026-12-01T00:00:00+01:00"),
        (2, "UTC+3", "2026-12-01T00:00:00-03:00"),
    ] {
        let report = quota_report::load(&mut db.conn(), user, at(now))
            .unwrap()
            .unwrap();
        let json = report.to_json();
        let tokens = month_tokens(&json);
        let period_end: DateTime<Utc> =
            serde_json::from_value(tokens["period_end"].clone()).unwrap();
        assert_eq!(tokens["resets_local"], resets_local, "{zone}: {json}");
        assert_eq!(
            DateTime::parse_from_rfc3339(resets_local).unwrap(),
            period_end,
            "{zone}"
        );
        assert!(resets_local.starts_with(&local_in_postgres(&db, period_end, zone)));
        assert_eq!(json["zone_used"], zone, "{json}");
        let table = report.to_table();
        assert!(table.contains("resets 2026-12-01 00:00"), "{zone}: {table}");
        assert!(!table.contains("unknown time zone"), "{zone}: {table}");
    }
}

#[test]
fn the_alert_email_shows_the_reset_in_the_zone_postgresql_counted_the_period_in() {
    let db = TestDb::new();
    let now = "2026-11-23T10:00:00Z";
    users_in_zones_chrono_tz_cannot_parse(&db, now);
    let memory = Arc::new(MemoryMailer::new());
    let ctx = Ctx::with_mailer(Arc::new(db.settings()), db.url.clone(), memory.clone());
    JobKind::Alerts
        .run(&ctx, &mut db.conn(), at(now), &RunOpts::default())
        .unwrap();

    let sent = memory.sent();
    assert_eq!(sent.len(), 2);
    for (to, resets) in [
        (
            "ada@example.com",
            "Tuesday 1 December 2026, 00:00 CET (europe/berlin)",
        ),
        (
            "bob@example.com",
            "Tuesday 1 December 2026, 00:00 UTC-03:00 (UTC+3)",
        ),
    ] {
        let email = sent.iter().find(|e| e.to.contains(to)).unwrap();
        // Quoted-printable soft line breaks aside, the text says when the quota resets.
        let raw = email.raw.replace("=\r\n", "");
        assert!(raw.contains(&format!("resets on {resets}")), "{to}: {raw}");
    }
}
