//! Retention benchmark: MONTHS months of events; the `retention` job (partition drops) against
//! the naive `DELETE … WHERE created_at < cutoff` of the same rows, in the same run, with the
//! latency of an insert issued while each runs. Prints one JSON line per scenario.
//!
//! `cargo bench --bench retention` (EVENTS_PER_MONTH=400000, MONTHS=27 of which DOOMED_MONTHS=3
//! are older than the retention cutoff, by default; set them lower for a quick look). For the
//! lock a large month's drop takes: `MONTHS=2 DOOMED_MONTHS=1 EVENTS_PER_MONTH=4000000
//! NAIVE=0` (NAIVE=0 skips the naive DELETE and VACUUM).

mod common;

use common::round;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use serde_json::json;
use usage_worker::embedded_pg::Durability;
use usage_worker::jobs::{Ctx, JobKind, RunOpts};

fn main() {
    let per_month = common::env_number("EVENTS_PER_MONTH", 400_000);
    // The first months loaded are the ones older than the cutoff.
    let doomed_months = common::env_number("DOOMED_MONTHS", 3).max(1);
    let months = common::env_number("MONTHS", 27).max(doomed_months + 1);
    let naive = common::env_number("NAIVE", 1) != 0;
    // Production-like durability: WAL and fsync are part of what a mass DELETE costs.
    let mut cluster = common::BenchCluster::start(Durability::Durable);
    let mut a = cluster.migrated_database("bench_a");
    let pg = &cluster.pg;
    let admin = &mut cluster.admin;

    // Now = 2027-04-01, so the cutoff is 2025-04-01: the months loaded before it
    // (doomed_months × per_month rows) are dropped; the others are kept.
    let now: DateTime<Utc> = "2027-04-01T00:00:00Z".parse().expect("instant");
    let cutoff = now - chrono::Months::new(24);
    let first_month = (cutoff - chrono::Months::new(doomed_months as u32))
        .format("%Y-%m-%d")
        .to_string();
    let load = Instant::now();
    let settings = Arc::new(common::bench_settings(&pg.url("bench_a")));
    let ctx = Ctx::new(settings.clone(), pg.url("bench_a"));
    JobKind::Partitions
        .run(&ctx, &mut a, now, &RunOpts::default())
        .expect("partitions for now");
    a.batch_execute(&format!(
        "DO $$ BEGIN
           FOR m IN 0..{last} LOOP
             EXECUTE format('CREATE TABLE IF NOT EXISTS usage_events_%s PARTITION OF usage_events
                             FOR VALUES FROM (%L) TO (%L)',
                            to_char(date '{first_month}' + make_interval(months => m), 'YYYY_MM'),
                            (date '{first_month}' + make_interval(months => m))::timestamptz,
                            (date '{first_month}' + make_interval(months => m + 1))::timestamptz);
           END LOOP;
         END $$;
         INSERT INTO usage_events (user_id, kind, model, tokens, created_at)
         SELECT n % 10000, 'ai_response', 'gpt-4o', 500,
                date '{first_month}' + make_interval(months => (n / {per_month})::int)
                  + make_interval(secs => (n % {per_month}) * (2419200.0 / {per_month}))
           FROM generate_series(0, {total} - 1) AS n;",
        last = months - 1,
        total = per_month * months,
    ))
    .expect("load events");
    // A transaction of its own: every event above is now below the watermark.
    a.batch_execute("UPDATE aggregation_watermark SET xid = pg_current_xact_id()")
        .expect("watermark");
    a.batch_execute("VACUUM ANALYZE usage_events")
        .expect("vacuum");
    let load_s = load.elapsed().as_secs_f64();
    drop(a);
    if naive {
        admin
            .batch_execute("CREATE DATABASE bench_b TEMPLATE bench_a")
            .expect("copy database");
    }

    let doomed = doomed_months * per_month;
    let (partition_s, partition_insert_ms) = with_concurrent_inserts(&pg.url("bench_a"), || {
        let mut conn = common::connect(&pg.url("bench_a"));
        let report = JobKind::Retention
            .run(&ctx, &mut conn, now, &RunOpts::default())
            .expect("retention");
        assert_eq!(
            report.details["tables"]["usage_events"]["partitions_dropped"]
                .as_array()
                .map(|a| a.len()),
            Some(doomed_months as usize),
            "{}",
            report.details
        );
    });
    let common = json!({
        "events": per_month * months,
        "rows_removed": doomed,
        "load_s": round(load_s),
    });
    println!(
        "{}",
        json!({
            "scenario": "retention_partition_drop",
            "seconds": round(partition_s),
            "max_insert_latency_ms": round(partition_insert_ms),
            "target_max_insert_latency_ms": "< 50",
            "setup": common,
        })
    );
    if !naive {
        return;
    }
    let (delete_s, delete_insert_ms) = with_concurrent_inserts(&pg.url("bench_b"), || {
        let mut conn = common::connect(&pg.url("bench_b"));
        conn.batch_execute(&format!(
            "DELETE FROM usage_events WHERE created_at < '{}'",
            cutoff.to_rfc3339()
        ))
        .expect("delete");
    });
    // A DELETE leaves the space behind as dead rows; dropping a partition returns it at once.
    let (vacuum_s, vacuum_insert_ms) = with_concurrent_inserts(&pg.url("bench_b"), || {
        let mut conn = common::connect(&pg.url("bench_b"));
        conn.batch_execute("VACUUM usage_events").expect("vacuum");
    });
    println!(
        "{}",
        json!({
            "scenario": "retention_naive_delete",
            "seconds": round(delete_s),
            "max_insert_latency_ms": round(delete_insert_ms),
            "setup": common,
        })
    );
    println!(
        "{}",
        json!({
            "scenario": "retention_naive_vacuum_after_delete",
            "seconds": round(vacuum_s),
            "max_insert_latency_ms": round(vacuum_insert_ms),
            "setup": common,
        })
    );
    println!(
        "{}",
        json!({
            "scenario": "retention_speedup",
            "delete_over_partition_drop": round(delete_s / partition_s.max(1e-6)),
            "delete_and_vacuum_over_partition_drop": round((delete_s + vacuum_s) / partition_s.max(1e-6)),
            "target": ">= 100",
        })
    );
}

/// Times `work` while another connection inserts a row every 10 ms; returns the work's
/// duration and the slowest insert.
fn with_concurrent_inserts(url: &str, work: impl FnOnce()) -> (f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut writer: PgConnection = common::connect(url);
    let flag = stop.clone();
    let handle = std::thread::spawn(move || {
        let mut worst = Duration::ZERO;
        while !flag.load(Ordering::SeqCst) {
            let start = Instant::now();
            writer
                .batch_execute(
                    "INSERT INTO usage_events (user_id, kind, created_at)
                     VALUES (1, 'message_sent', '2027-04-01T12:00:00Z')",
                )
                .expect("insert during retention");
            worst = worst.max(start.elapsed());
            std::thread::sleep(Duration::from_millis(10));
        }
        worst
    });
    std::thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    work();
    let elapsed = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::SeqCst);
    let worst = handle.join().expect("writer thread");
    (elapsed, worst.as_secs_f64() * 1000.0)
}
