//! Alerts benchmark: USERS users (100,000 by default) with three monthly limits and
//! EVENTS_PER_USER events each this month, 10 % of them past 80 % of their token limit.
//! Scenarios, one JSON line each:
//! - `decide`: the job's deciding statement (through diesel, bound parameters);
//! - `decide_raw_sql`: the same statement as plain SQL text with literal values;
//! - `naive_per_user`: the seeds' approach — for each user, read the plan's limits and sum the
//!   month's raw events, then check and insert each alert — on NAIVE_USERS users, scaled up;
//! - `deliver_smtp`: the job delivering every decided alert to an SMTP sink on 127.0.0.1.
//!
//! `cargo bench --bench alerts` (USERS=20000 for a quick look; POOL_SIZE sets
//! mail.smtp.pool_size, default the setting's default).

#[path = "../tests/it/support/smtp.rs"]
mod smtp;

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Numeric, Text, Timestamptz};
use serde_json::json;
use usage_worker::config::{HumanDuration, MailTransportKind, Settings, SmtpTls};
use usage_worker::embedded_pg::Durability;
use usage_worker::jobs::{Ctx, JobKind, RunOpts, alerts};

const MONTH_START: &str = "2026-11-01T00:00:00Z";
const MONTH_END: &str = "2026-12-01T00:00:00Z";
const NOW: &str = "2026-11-20T12:00:00Z";

fn main() {
    let users = common::env_number("USERS", 100_000);
    let events_per_user = common::env_number("EVENTS_PER_USER", 10);
    let naive_users = common::env_number("NAIVE_USERS", 10_000).min(users);
    // Forecasts (alerts.forecast_hours) are off by default; FORECAST_HOURS=72 turns them on
    // (the 10 % of users past 80 % then also get one: their pace ends the month early).
    let forecast_hours = u32::try_from(common::env_number("FORECAST_HOURS", 0)).unwrap_or(0);
    let mut cluster = common::BenchCluster::start(Durability::Throwaway);
    let mut conn = cluster.migrated_database("bench");
    let url = cluster.pg.url("bench");

    let load = Instant::now();
    conn.batch_execute(&format!(
        "INSERT INTO plans (id, name) VALUES (1, 'free');
         INSERT INTO plan_limits (plan_id, metric, period, kind, max_value) VALUES
             (1, 'tokens', 'month', '', 1000), (1, 'messages', 'month', '', 100),
             (1, 'cost', 'month', '', 50);
         INSERT INTO users (id, email, name, plan_id)
         SELECT g, 'user' || g || '@example.com', 'User ' || g, 1 FROM generate_series(1, {users}) g;
         CREATE TABLE usage_events_2026_11 PARTITION OF usage_events
             FOR VALUES FROM ('{MONTH_START}') TO ('{MONTH_END}');
         INSERT INTO usage_events (user_id, kind, tokens, messages, cost, created_at)
         SELECT u, 'ai_response', CASE WHEN u % 10 = 0 THEN 90 ELSE 30 END, 1, 0.01,
                timestamptz '{MONTH_START}' + make_interval(hours => e * 24)
           FROM generate_series(1, {users}) u, generate_series(1, {events_per_user}) e;
         INSERT INTO usage_periods (user_id, period, period_start, period_end, requests, messages, tokens, cost)
         SELECT user_id, 'month', '{MONTH_START}', '{MONTH_END}', count(*), sum(messages), sum(tokens), sum(cost)
           FROM usage_events GROUP BY user_id;"
    ))
    .expect("load data");
    conn.batch_execute("VACUUM ANALYZE").expect("vacuum");
    let load_s = load.elapsed().as_secs_f64();

    let now: DateTime<Utc> = NOW.parse().expect("instant");
    let server = smtp::SmtpServer::start();
    let mut settings = Settings::default();
    settings.database.url = url.clone();
    settings.mail.transport = Some(MailTransportKind::Smtp);
    settings.mail.smtp.host = "127.0.0.1".into();
    settings.mail.smtp.port = Some(server.port());
    settings.mail.smtp.tls = SmtpTls::None;
    settings.mail.smtp.timeout = HumanDuration(Duration::from_secs(10));
    settings.mail.from = "usage@example.com".into();
    settings.alerts.forecast_hours = (forecast_hours > 0).then_some(forecast_hours);
    if common::env_number("UNSUBSCRIBE", 0) == 1 {
        settings.mail.unsubscribe_url = Some("https://example.com/email/unsubscribe".into());
        settings.mail.unsubscribe_secret = Some("0123456789abcdef0123456789abcdef".into());
    }
    let default_pool = settings.mail.smtp.pool_size;
    settings.mail.smtp.pool_size =
        u32::try_from(common::env_number("POOL_SIZE", i64::from(default_pool)))
            .unwrap_or(default_pool);
    let ctx = Ctx::new(Arc::new(settings), url.clone());

    // Each timed attempt runs in a transaction that is rolled back, so all see the same data.
    let rolled_back = |conn: &mut PgConnection, f: &mut dyn FnMut(&mut PgConnection)| {
        let _ = conn.transaction::<(), diesel::result::Error, _>(|conn| {
            f(conn);
            Err(diesel::result::Error::RollbackTransaction)
        });
    };
    let reps = 5;
    let mut decided = 0i64;
    let decide_s = median(reps, || {
        let started = Instant::now();
        rolled_back(&mut conn, &mut |c| {
            decided = alerts::decide(&ctx, c, now, None)
                .expect("decide")
                .values()
                .sum();
        });
        started.elapsed()
    });
    let raw = alerts::DECIDE_STATEMENTS
        .join(";\n")
        .replace("$1", &format!("'{NOW}'::timestamptz"))
        .replace("$2", "'{80,95}'::int[]")
        .replace("$3", "86400::float8")
        .replace("$4", "NULL")
        .replace(
            "$5",
            &match forecast_hours {
                0 => "NULL::float8".to_string(),
                hours => format!("{}::float8", f64::from(hours) * 3_600.0),
            },
        );
    let raw_s = median(reps, || {
        let started = Instant::now();
        rolled_back(&mut conn, &mut |c| c.batch_execute(&raw).expect("raw"));
        started.elapsed()
    });
    let naive_sample_s = median(1, || {
        let started = Instant::now();
        rolled_back(&mut conn, &mut |c| naive_per_user(c, naive_users, now));
        started.elapsed()
    });
    let naive_s = naive_sample_s * users as f64 / naive_users as f64;
    print_line(json!({
        "scenario": "decide", "users": users, "events": users * events_per_user,
        "alerts_decided": decided, "seconds": decide_s, "load_seconds": load_s,
        "forecast_hours": forecast_hours,
    }));
    print_line(json!({
        "scenario": "decide_raw_sql", "users": users, "seconds": raw_s,
        "ratio_job_to_raw": decide_s / raw_s, "target_ratio_at_most": 1.3,
    }));
    print_line(json!({
        "scenario": "naive_per_user", "users_measured": naive_users,
        "seconds_measured": naive_sample_s, "seconds_for_all_users": naive_s,
        "speedup_of_decide": naive_s / decide_s, "target_speedup_at_least": 100,
    }));

    alerts::decide(&ctx, &mut conn, now, None).expect("decide for delivery");
    let started = Instant::now();
    let report = JobKind::Alerts
        .run(&ctx, &mut conn, now, &RunOpts::default())
        .expect("deliver");
    let deliver_s = started.elapsed().as_secs_f64();
    let sent = report.details["sent"].as_u64().unwrap_or(0);
    assert_eq!(server.received().len() as u64, sent);
    print_line(json!({
        "scenario": "deliver_smtp", "emails": sent, "seconds": deliver_s,
        "emails_per_second": sent as f64 / deliver_s, "pool_size": ctx.settings.mail.smtp.pool_size,
        "target_emails_per_second_at_least": 200,
    }));
}

fn median(reps: usize, mut f: impl FnMut() -> Duration) -> f64 {
    let mut times: Vec<f64> = (0..reps).map(|_| f().as_secs_f64()).collect();
    times.sort_by(|a, b| a.total_cmp(b));
    times[times.len() / 2]
}

fn print_line(value: serde_json::Value) {
    println!("{value}");
}

#[derive(QueryableByName)]
struct Limit {
    #[diesel(sql_type = Text)]
    metric: String,
    #[diesel(sql_type = Numeric)]
    max_value: bigdecimal::BigDecimal,
    #[diesel(sql_type = Bool)]
    alerts_enabled: bool,
}

#[derive(QueryableByName)]
struct Sums {
    #[diesel(sql_type = Numeric)]
    tokens: bigdecimal::BigDecimal,
    #[diesel(sql_type = Numeric)]
    messages: bigdecimal::BigDecimal,
    #[diesel(sql_type = Numeric)]
    cost: bigdecimal::BigDecimal,
}

#[derive(QueryableByName)]
struct Exists {
    #[diesel(sql_type = Bool)]
    e: bool,
}

/// The seeds' way: one user at a time, the month's usage summed from raw events.
fn naive_per_user(conn: &mut PgConnection, users: i64, now: DateTime<Utc>) {
    let start: DateTime<Utc> = MONTH_START.parse().expect("instant");
    let end: DateTime<Utc> = MONTH_END.parse().expect("instant");
    for user in 1..=users {
        let limits: Vec<Limit> = diesel::sql_query(
            "SELECT l.metric, l.max_value, u.alerts_enabled FROM users u
               JOIN plan_limits l ON l.plan_id = u.plan_id AND l.period = 'month' AND l.kind = ''
              WHERE u.id = $1",
        )
        .bind::<BigInt, _>(user)
        .load(conn)
        .expect("limits");
        let sums: Sums = diesel::sql_query(
            "SELECT COALESCE(sum(tokens), 0)::numeric AS tokens, COALESCE(sum(messages), 0)::numeric AS messages,
                    COALESCE(sum(cost), 0) AS cost
               FROM usage_events WHERE user_id = $1 AND created_at >= $2 AND created_at < $3",
        )
        .bind::<BigInt, _>(user)
        .bind::<Timestamptz, _>(start)
        .bind::<Timestamptz, _>(end)
        .get_result(conn)
        .expect("sums");
        for limit in limits {
            let used = match limit.metric.as_str() {
                "tokens" => &sums.tokens,
                "messages" => &sums.messages,
                _ => &sums.cost,
            };
            for threshold in [80, 95] {
                if used * bigdecimal::BigDecimal::from(100)
                    < &limit.max_value * bigdecimal::BigDecimal::from(threshold)
                {
                    continue;
                }
                let exists: Exists = diesel::sql_query(
                    "SELECT EXISTS (SELECT 1 FROM quota_alerts WHERE user_id = $1 AND metric = $2
                        AND period = 'month' AND kind = '' AND period_start = $3 AND threshold = $4) AS e",
                )
                .bind::<BigInt, _>(user)
                .bind::<Text, _>(&limit.metric)
                .bind::<Timestamptz, _>(start)
                .bind::<diesel::sql_types::Int2, _>(threshold as i16)
                .get_result(conn)
                .expect("exists");
                if !exists.e {
                    diesel::sql_query(
                        "INSERT INTO quota_alerts (user_id, metric, period, kind, period_start, period_end,
                             threshold, used_value, limit_value, status, next_attempt_at, decided_at)
                         VALUES ($1, $2, 'month', '', $3, $4, $5, $6, $7, $8, $9, $9)",
                    )
                    .bind::<BigInt, _>(user)
                    .bind::<Text, _>(&limit.metric)
                    .bind::<Timestamptz, _>(start)
                    .bind::<Timestamptz, _>(end)
                    .bind::<diesel::sql_types::Int2, _>(threshold as i16)
                    .bind::<Numeric, _>(used)
                    .bind::<Numeric, _>(&limit.max_value)
                    .bind::<Text, _>(if limit.alerts_enabled { "pending" } else { "suppressed" })
                    .bind::<Timestamptz, _>(now)
                    .execute(conn)
                    .expect("insert");
                }
            }
        }
    }
}
