//! Benchmark of the `aggregate` job on a private throwaway cluster. Prints one JSON line per
//! scenario:
//! - `from_empty`: 1,000,000 events of 10,000 users over 30 days, aggregated from an empty
//!   watermark, against the raw lower bound: one INSERT … SELECT … GROUP BY of the same rows
//!   (with the same time-zone conversion) into an empty table. Target ratio ≤ 1.3.
//! - `incremental`: 10,000 new events on top of 1,000,000 and of 10,000,000 existing ones.
//!   Target: the two cost about the same (ratio < 2).
//! - `backfill`: 10,000,000 events aggregated from an empty watermark in bounded
//!   transactions: events per second.
//!
//! `cargo bench --bench aggregate`. AGGREGATE_BENCH_SCALE (default 1) multiplies every event
//! count, for machines that cannot hold 10 million events.

mod common;

use common::round;

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use serde_json::json;
use usage_worker::config::Settings;
use usage_worker::db;
use usage_worker::embedded_pg::{Durability, EmbeddedPg};
use usage_worker::jobs::{Ctx, JobKind, RunOpts};

const USERS: i64 = 10_000;
const DAYS: i64 = 30;
/// Events per inserting transaction while loading: a backlog of many small writers.
const LOAD_CHUNK: i64 = 10_000;
const NEW_EVENTS: i64 = 10_000;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

fn main() {
    let scale: f64 = std::env::var("AGGREGATE_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let small = (1_000_000.0 * scale) as i64;
    let large = (10_000_000.0 * scale) as i64;

    let mut cluster = common::BenchCluster::start(Durability::Throwaway);
    let pg = &cluster.pg;
    let admin = &mut cluster.admin;

    // The 1M database: lower bound, aggregate from empty, then an incremental run.
    let (ctx, mut conn) = database(pg, admin, "bench_small", small);
    let raw_seconds = timed(|| {
        conn.batch_execute(RAW_LOWER_BOUND)
            .expect("raw lower bound");
    });
    let report = run_aggregate(&ctx, &mut conn);
    let aggregate_seconds = report.0;
    println!(
        "{}",
        json!({
            "scenario": "from_empty",
            "events": small, "users": USERS, "days": DAYS,
            "aggregate_s": round(aggregate_seconds),
            "raw_insert_select_group_by_s": round(raw_seconds),
            "ratio": round(aggregate_seconds / raw_seconds),
            "transactions": report.1,
            "target": "ratio <= 1.3",
        })
    );
    let small_incremental = incremental(&ctx, &mut conn, small);
    drop(conn);
    admin
        .batch_execute("DROP DATABASE bench_small")
        .expect("drop database");

    // The 10M database: the backfill, then an incremental run on top of it.
    let (ctx, mut conn) = database(pg, admin, "bench_large", large);
    let (seconds, transactions) = run_aggregate(&ctx, &mut conn);
    println!(
        "{}",
        json!({
            "scenario": "backfill",
            "events": large, "users": USERS, "days": DAYS,
            "aggregate_s": round(seconds),
            "events_per_s": (large as f64 / seconds).round(),
            "transactions": transactions,
        })
    );
    let large_incremental = incremental(&ctx, &mut conn, large);
    println!(
        "{}",
        json!({
            "scenario": "incremental_ratio",
            "new_events": NEW_EVENTS,
            "on_small_s": round(small_incremental),
            "on_large_s": round(large_incremental),
            "ratio": round(large_incremental / small_incremental),
            "target": "ratio < 2",
        })
    );
}

fn timed(f: impl FnOnce()) -> f64 {
    let started = Instant::now();
    f();
    started.elapsed().as_secs_f64()
}

fn run_aggregate(ctx: &Ctx, conn: &mut PgConnection) -> (f64, serde_json::Value) {
    let mut transactions = serde_json::Value::Null;
    let seconds = timed(|| {
        let report = JobKind::Aggregate
            .run(ctx, conn, now(), &RunOpts::default())
            .expect("aggregate run");
        transactions = report.details["transactions"].clone();
    });
    (seconds, transactions)
}

/// Adds NEW_EVENTS events in ten transactions and times the run that aggregates them.
fn incremental(ctx: &Ctx, conn: &mut PgConnection, existing: i64) -> f64 {
    for i in 0..10 {
        conn.batch_execute(&load_sql(existing + i * NEW_EVENTS / 10, NEW_EVENTS / 10))
            .expect("insert new events");
    }
    let (seconds, _) = run_aggregate(ctx, conn);
    println!(
        "{}",
        json!({
            "scenario": "incremental",
            "existing_events": existing,
            "new_events": NEW_EVENTS,
            "aggregate_s": round(seconds),
        })
    );
    seconds
}

fn database(
    pg: &EmbeddedPg,
    admin: &mut PgConnection,
    name: &str,
    events: i64,
) -> (Arc<Ctx>, PgConnection) {
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .expect("create database");
    let url = pg.url(name);
    let mut conn = db::connect(&url).expect("connect");
    db::run_migrations(&mut conn).expect("migrate");
    let mut settings = Settings::default();
    settings.database.url = url.clone();
    let ctx = Arc::new(Ctx::new(Arc::new(settings), url));
    // Monthly partitions for the 30 days (October and November 2026).
    JobKind::Partitions
        .run(
            &ctx,
            &mut conn,
            "2026-10-01T00:00:00Z".parse().unwrap_or_default(),
            &RunOpts::default(),
        )
        .expect("partitions");
    conn.batch_execute(&format!(
        "INSERT INTO users (id, email, timezone)
         SELECT g, 'user' || g || '@example.com',
                (ARRAY['UTC', 'Europe/Berlin', 'America/New_York', 'Asia/Kolkata',
                       'Australia/Sydney', 'America/Los_Angeles', 'Asia/Tokyo',
                       'Europe/London', 'Australia/Lord_Howe', 'America/Sao_Paulo'])[1 + g % 10]
           FROM generate_series(1, {USERS}) g"
    ))
    .expect("users");
    let started = Instant::now();
    let mut loaded = 0;
    while loaded < events {
        let n = LOAD_CHUNK.min(events - loaded);
        conn.batch_execute(&load_sql(loaded, n))
            .expect("load events");
        loaded += n;
    }
    conn.batch_execute("VACUUM ANALYZE").expect("vacuum");
    eprintln!(
        "{name}: loaded {events} events in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    (ctx, conn)
}

/// Events number `first..first + n`: spread over users, 30 days of October 2026, kinds and
/// models, deterministic.
fn load_sql(first: i64, n: i64) -> String {
    format!(
        "INSERT INTO usage_events (user_id, kind, request_type, model, tokens, prompt_tokens,
                                   completion_tokens, messages, bytes, cost, created_at)
         SELECT 1 + (g * 7919) % {USERS},
                (ARRAY['ai_response', 'message_sent', 'file_upload', 'image_generation'])[1 + g % 4],
                (ARRAY['chat', 'prompt', ''])[1 + g % 3],
                (ARRAY['gpt-4o', 'gpt-4o-mini', 'claude-sonnet', ''])[1 + (g / 4) % 4],
                g % 3000, g % 1000, g % 3000 - g % 1000,
                (g % 4 = 1)::int, (g % 7) * 1024, (g % 1000) * 0.00001,
                '2026-10-01T00:00:00Z'::timestamptz
                    + ((g * 104729) % ({DAYS} * 86400)) * interval '1 second'
           FROM generate_series({first}::bigint, {last}) g",
        last = first + n - 1
    )
}

/// The lower bound: the same sums, in one statement, into an empty table.
const RAW_LOWER_BOUND: &str = "
    CREATE TABLE raw_bound (LIKE token_usage_daily INCLUDING ALL);
    INSERT INTO raw_bound
    SELECT e.user_id, (e.created_at AT TIME ZONE u.timezone)::date, e.kind, e.request_type,
           e.model, count(*), sum(e.tokens), sum(e.prompt_tokens), sum(e.completion_tokens),
           sum(e.messages), sum(e.bytes), sum(e.cost)
      FROM usage_events e
      JOIN users u ON u.id = e.user_id
     GROUP BY 1, 2, 3, 4, 5;";
