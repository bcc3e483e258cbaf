//! Sustained load: four writer threads insert usage events as fast as they can (plain
//! `INSERT`s of realistic rows over 1,000 users) while the `aggregate` job runs every 10
//! seconds, as the daemon would with `jobs.aggregate.schedule = "*/10 * * * * *"`. A probe
//! writes one event a second for a user of its own and polls `quota_status()` for it: the lag
//! is the time from an event's commit to its appearance there. Prints one JSON line: the
//! writers' events/s, the job's events/s (events per second of run time and per second of
//! wall time), the largest lag (goal: under 30 s) and, when the job falls behind, by how many
//! events per second.
//!
//! `cargo bench --bench sustained`; `UW_BENCH_SECONDS` (default 300 × `UW_BENCH_SCALE`) sets
//! the duration.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Numeric};
use serde_json::json;
use usage_worker::embedded_pg::Durability;
use usage_worker::jobs::{Ctx, JobKind, RunOpts};

const WRITERS: usize = 4;
const USERS: i64 = 1_000;
const ROWS_PER_INSERT: i64 = 500;
const PERIOD: Duration = Duration::from_secs(10);
const PROBE_USER: i64 = 1_000_000;

fn main() {
    let seconds = std::env::var("UW_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(300.0 * common::scale());
    let duration = Duration::from_secs_f64(seconds.max(20.0));

    let mut cluster = common::BenchCluster::start(Durability::Throwaway);
    cluster
        .admin
        .batch_execute("CREATE DATABASE sustained")
        .expect("create database");
    let url = cluster.pg.url("sustained");
    let mut conn = common::connect(&url);
    common::migrate(&mut conn);
    let ctx = Ctx::new(Arc::new(common::bench_settings(&url)), url.clone());
    JobKind::Partitions
        .run(&ctx, &mut conn, Utc::now(), &RunOpts::default())
        .expect("partitions");
    conn.batch_execute(&format!(
        "INSERT INTO users (id, email, timezone)
         SELECT g, 'user' || g || '@example.com',
                (ARRAY['UTC', 'Europe/Berlin', 'America/New_York', 'Asia/Kolkata', 'Asia/Tokyo'])[1 + g % 5]
           FROM generate_series(1, {USERS}) g;
         INSERT INTO users (id, email) VALUES ({PROBE_USER}, 'probe@example.com');"
    ))
    .expect("users");

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (url, stop, written) = (url.clone(), stop.clone(), written.clone());
            std::thread::spawn(move || write_events(&url, w as i64, &stop, &written))
        })
        .collect();
    let probe = {
        let (url, stop) = (url.clone(), stop.clone());
        std::thread::spawn(move || probe_lag(&url, &stop))
    };

    let started = Instant::now();
    let (runs, aggregated, run_seconds) = aggregate_every_period(&ctx, &mut conn, duration);
    let wall = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().expect("writer thread");
    }
    let max_lag = probe.join().expect("probe thread");
    let written = written.load(Ordering::Relaxed) as f64;
    let backlog = common::count(
        &mut conn,
        "SELECT count(*) AS n FROM usage_events
          WHERE recorded_xid >= (SELECT xid FROM aggregation_watermark)",
    );
    let behind = (written - aggregated as f64) / wall;
    println!(
        "{}",
        json!({
            "scenario": "sustained",
            "seconds": wall.round(),
            "writers": WRITERS,
            "writer_events_per_s": (written / wall).round(),
            "aggregate_runs": runs,
            "aggregate_events_per_s_of_run_time": (aggregated as f64 / run_seconds.max(1e-9)).round(),
            "aggregate_events_per_s_of_wall_time": (aggregated as f64 / wall).round(),
            "aggregate_busy_share": (run_seconds / wall * 100.0).round() / 100.0,
            "backlog_at_end": backlog,
            "max_lag_s": (max_lag * 10.0).round() / 10.0,
            "keeps_up": max_lag < 30.0,
            "falls_behind_by_events_per_s": if max_lag < 30.0 { 0.0 } else { behind.round() },
            "target": "max_lag_s < 30",
        })
    );
}

/// Runs `aggregate` at every 10-second instant from the start, as the scheduler would (a run
/// longer than a period skips the ticks it overlaps). Returns runs, events and run seconds.
fn aggregate_every_period(
    ctx: &Ctx,
    conn: &mut PgConnection,
    duration: Duration,
) -> (u64, u64, f64) {
    let started = Instant::now();
    let (mut runs, mut events, mut busy) = (0u64, 0u64, 0.0f64);
    let mut tick = PERIOD;
    while tick <= duration {
        if let Some(wait) = tick.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        let run_started = Instant::now();
        let report = JobKind::Aggregate
            .run(ctx, conn, Utc::now(), &RunOpts::default())
            .expect("aggregate run");
        busy += run_started.elapsed().as_secs_f64();
        runs += 1;
        events += report.details["events"].as_u64().unwrap_or(0);
        let elapsed = started.elapsed();
        while tick <= elapsed {
            tick += PERIOD;
        }
    }
    (runs, events, busy)
}

/// One writer: autocommitted INSERTs of ROWS_PER_INSERT events until told to stop.
fn write_events(url: &str, writer: i64, stop: &AtomicBool, written: &AtomicU64) {
    let mut conn = common::connect(url);
    let mut batch = 0i64;
    while !stop.load(Ordering::Relaxed) {
        let seed = (batch * WRITERS as i64 + writer) * ROWS_PER_INSERT;
        conn.batch_execute(&common::insert_events_sql(
            USERS,
            seed,
            ROWS_PER_INSERT,
            "now()",
        ))
        .expect("insert events");
        written.fetch_add(ROWS_PER_INSERT as u64, Ordering::Relaxed);
        batch += 1;
    }
}

#[derive(QueryableByName)]
struct Used {
    #[diesel(sql_type = Numeric)]
    used: bigdecimal::BigDecimal,
}

/// Writes one event a second for PROBE_USER and polls quota_status() every 100 ms; returns
/// the largest time from an event's commit to quota_status counting it, in seconds.
fn probe_lag(url: &str, stop: &AtomicBool) -> f64 {
    let mut conn = common::connect(url);
    let mut committed: Vec<Instant> = Vec::new();
    let mut seen = 0usize;
    let mut max_lag = 0.0f64;
    let mut next_write = Instant::now();
    loop {
        if Instant::now() >= next_write {
            conn.batch_execute(&format!(
                "INSERT INTO usage_events (user_id, kind, tokens) VALUES ({PROBE_USER}, 'ai_response', 1)"
            ))
            .expect("probe insert");
            committed.push(Instant::now());
            next_write += Duration::from_secs(1);
        }
        let used: Used = diesel::sql_query(
            "SELECT used FROM quota_status($1)
              WHERE metric = 'requests' AND period = 'month' AND kind = ''",
        )
        .bind::<BigInt, _>(PROBE_USER)
        .get_result(&mut conn)
        .expect("quota_status");
        let counted = used.used.to_string().parse::<usize>().unwrap_or(0);
        while seen < counted.min(committed.len()) {
            max_lag = max_lag.max(committed[seen].elapsed().as_secs_f64());
            seen += 1;
        }
        // Events still waiting count with their age so far: a stalled job shows as lag.
        if let Some(oldest) = committed.get(seen) {
            max_lag = max_lag.max(oldest.elapsed().as_secs_f64());
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    max_lag
}
