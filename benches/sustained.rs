//! Sustained load: four writer threads record usage events as fast as they can over 1,000
//! users — plain `INSERT`s of 500 realistic rows (`WRITER=insert`, the default) or one
//! `usage_record()` call per transaction (`WRITER=usage_record`) — while the `aggregate` job
//! runs at the ticks of its default schedule (`jobs.aggregate.schedule`), as the daemon would.
//! A probe measures, every 100 ms, the lag (the age of the oldest event not yet aggregated)
//! and the time `quota_status()` of a writer's user takes. Prints one JSON line: the writers'
//! events/s, the job's events/s (per second of run time and of wall time), the largest lag
//! (goal: under 10 s) and, when the job falls behind, by how many events per second, and the
//! quota_status latency percentiles (goal: p99 under 2 ms).
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
use diesel::sql_types::{BigInt, Double};
use serde_json::json;
use usage_worker::embedded_pg::Durability;
use usage_worker::jobs::{Ctx, JobKind, RunOpts};
use usage_worker::schedule::Schedule;

const WRITERS: usize = 4;
const USERS: i64 = 1_000;
const ROWS_PER_INSERT: i64 = 500;
const MAX_LAG_S: f64 = 10.0;

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
"
    ))
    .expect("users");

    let writer_kind = std::env::var("WRITER").unwrap_or_else(|_| "insert".to_string());
    let record = match writer_kind.as_str() {
        "insert" => false,
        "usage_record" => true,
        other => panic!("WRITER={other}: expected insert or usage_record"),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (url, stop, written) = (url.clone(), stop.clone(), written.clone());
            std::thread::spawn(move || {
                if record {
                    record_events(&url, w as i64, &stop, &written)
                } else {
                    write_events(&url, w as i64, &stop, &written)
                }
            })
        })
        .collect();
    let probe = {
        let (url, stop) = (url.clone(), stop.clone());
        std::thread::spawn(move || probe_lag(&url, &stop))
    };

    let started = Instant::now();
    let schedule = Schedule::parse(JobKind::Aggregate.defaults().schedule).expect("schedule");
    let (runs, passes, aggregated, run_seconds) =
        aggregate_on_schedule(&ctx, &mut conn, &schedule, duration);
    let wall = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().expect("writer thread");
    }
    let (max_lag, status_ms) = probe.join().expect("probe thread");
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
            "writer": writer_kind,
            "aggregate_schedule": schedule.source(),
            "writer_events_per_s": (written / wall).round(),
            "aggregate_runs": runs,
            "aggregate_passes": passes,
            "aggregate_events_per_s_of_run_time": (aggregated as f64 / run_seconds.max(1e-9)).round(),
            "aggregate_events_per_s_of_wall_time": (aggregated as f64 / wall).round(),
            "aggregate_busy_share": (run_seconds / wall * 100.0).round() / 100.0,
            "backlog_at_end": backlog,
            "max_lag_s": (max_lag * 10.0).round() / 10.0,
            "keeps_up": max_lag < MAX_LAG_S,
            "falls_behind_by_events_per_s": if max_lag < MAX_LAG_S { 0.0 } else { behind.round() },
            "quota_status_ms": common::percentiles(status_ms),
            "target": "max_lag_s < 10, quota_status p99 < 2 ms",
        })
    );
}

/// Runs `aggregate` at every tick of `schedule` from the start, as the scheduler would (a run
/// longer than a period skips the ticks it overlaps). Returns runs, their passes (a run
/// follows the writers while they keep it busy), events and run seconds.
fn aggregate_on_schedule(
    ctx: &Ctx,
    conn: &mut PgConnection,
    schedule: &Schedule,
    duration: Duration,
) -> (u64, u64, u64, f64) {
    let end = Utc::now() + chrono::Duration::from_std(duration).expect("duration");
    let (mut runs, mut passes, mut events, mut busy) = (0u64, 0u64, 0u64, 0.0f64);
    while let Some(tick) = schedule.next_after(Utc::now()).filter(|tick| *tick <= end) {
        if let Ok(wait) = (tick - Utc::now()).to_std() {
            std::thread::sleep(wait);
        }
        let run_started = Instant::now();
        let report = JobKind::Aggregate
            .run(ctx, conn, Utc::now(), &RunOpts::default())
            .expect("aggregate run");
        busy += run_started.elapsed().as_secs_f64();
        runs += 1;
        passes += report.details["passes"].as_u64().unwrap_or(1);
        events += report.details["events"].as_u64().unwrap_or(0);
    }
    (runs, passes, events, busy)
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

/// One writer: a `usage_record()` call per transaction until told to stop.
fn record_events(url: &str, writer: i64, stop: &AtomicBool, written: &AtomicU64) {
    let mut conn = common::connect(url);
    let mut n = writer;
    while !stop.load(Ordering::Relaxed) {
        diesel::sql_query(
            "SELECT usage_record(p_user_id => $1, p_kind => 'ai_response', p_request_type => 'chat',
                                p_model => 'gpt-4o', p_prompt_tokens => 800,
                                p_completion_tokens => $2) AS id",
        )
        .bind::<BigInt, _>(1 + n % USERS)
        .bind::<BigInt, _>(100 + n % 400)
        .execute(&mut conn)
        .expect("usage_record");
        written.fetch_add(1, Ordering::Relaxed);
        n += WRITERS as i64;
    }
}

#[derive(QueryableByName)]
struct Lag {
    #[diesel(sql_type = Double)]
    lag: f64,
}

/// Every 100 ms: the age of the oldest event not yet aggregated (its `created_at` is its
/// insert's `now()`), and the time quota_status() of user 1, a writer's, takes. Returns the
/// largest lag in seconds and the latencies in milliseconds.
fn probe_lag(url: &str, stop: &AtomicBool) -> (f64, Vec<f64>) {
    let mut conn = common::connect(url);
    let mut max_lag = 0.0f64;
    let mut status_ms = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let lag: Lag = diesel::sql_query(
            "SELECT COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - (
                        SELECT e.created_at FROM usage_events e
                         WHERE e.recorded_xid >= (SELECT xid FROM aggregation_watermark)
                         ORDER BY e.recorded_xid LIMIT 1)), 0)::float8 AS lag",
        )
        .get_result(&mut conn)
        .expect("lag");
        max_lag = max_lag.max(lag.lag);
        let started = Instant::now();
        conn.batch_execute("SELECT * FROM quota_status(1)")
            .expect("quota_status");
        status_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(100));
    }
    (max_lag, status_ms)
}
