//! Benchmark of what credit grants cost `aggregate`: the `30_days` data set of the aggregate
//! benchmark (1,000,000 events of 10,000 users over 30 days, in ten zones), every user on a
//! plan of 100,000 tokens a month, aggregated from empty with no grants and with 10 % of the
//! users holding one (40,000 tokens from day 10 of the month to the end of the next: a
//! period cut by its start, usage past the limit drawn). The two are run alternately on the
//! same database (the books emptied and the watermark set back between runs, each pair in
//! the other order than the one before), `UW_BENCH_PAIRS` pairs (default 4); after each, 10,000 new events are aggregated on top (the incremental
//! run) and deleted again. Prints one JSON line per run and the ratios of the means. Target:
//! with grants at most 5 % slower.
//!
//! `cargo bench --bench grants`; `UW_BENCH_SCALE` multiplies the events,
//! `UW_BENCH_GRANT_PERCENT` (default 10) sets the share of users with a grant.

mod common;

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use serde_json::json;
use usage_worker::embedded_pg::Durability;
use usage_worker::jobs::{Ctx, JobKind, RunOpts};

use common::round;

const USERS: i64 = 10_000;
const START: &str = "2026-10-01T00:00:00Z";
const DAYS: i64 = 30;
const LOAD_CHUNK: i64 = 10_000;

/// One run's seconds: from empty, then the incremental run on top.
type Run = (f64, f64);

fn full(run: &Run) -> f64 {
    run.0
}

fn incr(run: &Run) -> f64 {
    run.1
}

fn main() {
    let events = ((1_000_000.0 * common::scale()) as i64).max(LOAD_CHUNK);
    let pairs = common::env_number("UW_BENCH_PAIRS", 4).max(1);
    let percent = common::env_number("UW_BENCH_GRANT_PERCENT", 10).clamp(1, 100);
    let mut cluster = common::BenchCluster::start(Durability::Throwaway);
    let mut conn = cluster.migrated_database("bench_grants");
    let url = cluster.pg.url("bench_grants");
    let ctx = Arc::new(Ctx::new(Arc::new(common::bench_settings(&url)), url));
    load(&ctx, &mut conn, events);

    let (mut without, mut with) = (Vec::new(), Vec::new());
    for pair in 0..pairs {
        // Each pair in the other order than the one before, so neither side always goes first.
        let order = if pair % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for grants in order {
            reset_books(&mut conn, grants, percent);
            let seconds = aggregate(&ctx, &mut conn);
            let incremental = incremental(&ctx, &mut conn, events);
            let drawn = common::count(
                &mut conn,
                "SELECT COALESCE(sum(drawn), 0)::bigint AS n FROM usage_grant_draws",
            );
            println!(
                "{}",
                json!({
                    "scenario": "aggregate_from_empty",
                    "pair": pair,
                    "grants": grants,
                    "subjects_with_grants": if grants { USERS * percent / 100 } else { 0 },
                    "events": events,
                    "aggregate_s": round(seconds),
                    "incremental_10k_s": round(incremental),
                    "tokens_drawn": drawn,
                })
            );
            if grants { &mut with } else { &mut without }.push((seconds, incremental));
        }
    }
    let mean = |v: &[Run], f: fn(&Run) -> f64| v.iter().map(f).sum::<f64>() / v.len() as f64;
    let listed = |v: &[Run], f: fn(&Run) -> f64| v.iter().map(|r| round(f(r))).collect::<Vec<_>>();
    println!(
        "{}",
        json!({
            "scenario": "grants_cost",
            "without_grants_s": listed(&without, full),
            "with_grants_s": listed(&with, full),
            "ratio_of_means": round(mean(&with, full) / mean(&without, full)),
            "incremental_without_s": listed(&without, incr),
            "incremental_with_s": listed(&with, incr),
            "incremental_ratio_of_means": round(mean(&with, incr) / mean(&without, incr)),
            "target": "ratio_of_means <= 1.05",
        })
    );
}

/// Users in ten zones on one plan, the monthly partitions, and the events.
fn load(ctx: &Ctx, conn: &mut PgConnection, events: i64) {
    for month in [
        "2026-09-15T00:00:00Z",
        "2026-10-15T00:00:00Z",
        "2026-11-15T00:00:00Z",
    ] {
        let at = month.parse().unwrap_or_else(|_| Utc::now());
        JobKind::Partitions
            .run(ctx, conn, at, &RunOpts::default())
            .expect("partitions");
    }
    conn.batch_execute(&format!(
        "INSERT INTO plans (id, name) VALUES (1, 'metered');
         INSERT INTO plan_limits (plan_id, metric, period, kind, max_value)
              VALUES (1, 'tokens', 'month', '', 100000);
         INSERT INTO users (id, email, timezone, plan_id)
         SELECT g, 'user' || g || '@example.com',
                (ARRAY['UTC', 'Europe/Berlin', 'America/New_York', 'Asia/Kolkata',
                       'Australia/Sydney', 'America/Los_Angeles', 'Asia/Tokyo',
                       'Europe/London', 'Australia/Lord_Howe', 'America/Sao_Paulo'])[1 + g % 10], 1
           FROM generate_series(1, {USERS}) g"
    ))
    .expect("users");
    let started = Instant::now();
    let created_at =
        format!("'{START}'::timestamptz + ((g * 104729) % ({DAYS} * 86400)) * interval '1 second'");
    let mut loaded = 0;
    while loaded < events {
        let n = LOAD_CHUNK.min(events - loaded);
        conn.batch_execute(&common::insert_events_with_org_sql(
            USERS,
            loaded,
            n,
            &created_at,
            "NULL",
        ))
        .expect("load events");
        loaded += n;
    }
    conn.batch_execute("VACUUM ANALYZE").expect("vacuum");
    eprintln!(
        "loaded {events} events in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

/// Empties the books and sets the watermark back, so the next run counts every event again;
/// with `grants`, every `percent`-th user holds one.
fn reset_books(conn: &mut PgConnection, grants: bool, percent: i64) {
    conn.batch_execute(
        "TRUNCATE token_usage_daily, usage_periods, usage_period_kind_totals, usage_grant_draws,
                  usage_grant_marks, usage_grants, quota_alerts CASCADE;
         UPDATE aggregation_watermark SET xid = '0'::xid8;",
    )
    .expect("reset the books");
    if grants {
        conn.batch_execute(&format!(
            "INSERT INTO usage_grants (user_id, metric, period, amount, starts_at, expires_at, reason)
             SELECT g, 'tokens', 'month', 40000, '2026-10-11T00:00:00Z', '2026-11-30T00:00:00Z', 'bench'
               FROM generate_series(1, {USERS}) g
              WHERE g % (100 / {percent}) = 0"
        ))
        .expect("grants");
    }
    conn.batch_execute("VACUUM ANALYZE").expect("vacuum");
}

/// 10,000 new events (ten inserting transactions) on top of the data set, aggregated: the
/// time of that run. The events are deleted again, so every round starts from the same set.
fn incremental(ctx: &Ctx, conn: &mut PgConnection, events: i64) -> f64 {
    let created_at =
        format!("'{START}'::timestamptz + ((g * 104729) % ({DAYS} * 86400)) * interval '1 second'");
    for t in 0..10 {
        conn.batch_execute(&common::insert_events_with_org_sql(
            USERS,
            events + t * 1_000,
            1_000,
            &created_at,
            "NULL",
        ))
        .expect("new events");
    }
    let seconds = aggregate(ctx, conn);
    conn.batch_execute(&format!(
        "DELETE FROM usage_events WHERE id > (SELECT min(id) - 1 + {events} FROM usage_events)"
    ))
    .expect("delete the new events");
    seconds
}

fn aggregate(ctx: &Ctx, conn: &mut PgConnection) -> f64 {
    let started = Instant::now();
    JobKind::Aggregate
        .run(ctx, conn, Utc::now(), &RunOpts::default())
        .expect("aggregate run");
    started.elapsed().as_secs_f64()
}
