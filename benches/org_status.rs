//! `org_quota_status(org_id)` latency: ORGS organizations (10,000 by default) on a plan with
//! two kind-scoped limits, in four zones, each with 24 closed monthly periods, 14 closed daily
//! periods and the open ones, beside as many users' personal periods (the rows an
//! organization's lookup must skip). Calls for random organizations: p50 / p99 / max of the
//! client round trip, every column decoded as `--usage --org` decodes it.
//!
//! `cargo bench --bench org_status` (ORGS=1000 for a quick look).

mod common;

use common::{next, percentiles, round};

use std::time::Instant;

use chrono::{DateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Timestamptz};
use serde_json::json;
use usage_worker::embedded_pg::Durability;
use usage_worker::quota_report::QuotaRow;

const STATUS_CALLS: usize = 5_000;

fn main() {
    let orgs = common::env_number("ORGS", 10_000);
    let mut cluster = common::BenchCluster::start(Durability::Throwaway);
    let mut conn = cluster.migrated_database("bench_org_status");

    let load = Instant::now();
    conn.batch_execute(&format!(
        "INSERT INTO plans (id, name) VALUES (1, 'team');
         INSERT INTO plan_limits (plan_id, metric, period, kind, max_value)
         VALUES (1, 'tokens', 'month', '', 5000000), (1, 'messages', 'month', '', 100000),
                (1, 'requests', 'day', 'image_generation', 200), (1, 'bytes', 'month', 'file_upload', 1073741824);
         INSERT INTO organizations (id, name, plan_id, timezone)
         SELECT g, 'Organization ' || g, 1,
                (ARRAY['UTC', 'Europe/Berlin', 'America/New_York', 'Asia/Kolkata'])[1 + g % 4]
           FROM generate_series(1, {orgs}) AS g;
         {org_months}
         {org_days}
         {user_months}
         INSERT INTO usage_period_kind_totals (user_id, org_id, period, period_start, kind, requests, tokens)
         SELECT user_id, org_id, period, period_start, 'image_generation', 3, 0
           FROM usage_periods WHERE status = 'open';",
        org_months = periods_sql("0", "o.id", "month", 24, "2024-12-15T00:00:00Z", 5000, 250000),
        org_days = periods_sql("0", "o.id", "day", 14, "2026-11-09T12:00:00Z", 50, 8000),
        // The same number of personal periods of users with the same ids.
        user_months = periods_sql("o.id", "0", "month", 24, "2024-12-15T00:00:00Z", 100, 5000),
    ))
    .expect("load organizations and periods");
    conn.batch_execute("VACUUM ANALYZE").expect("vacuum");
    let load_s = load.elapsed().as_secs_f64();
    let rows = common::count(&mut conn, "SELECT count(*) AS n FROM usage_periods");

    let mut calls = StatusCalls::new(orgs);
    // Warm the caches the way a running system has them.
    calls.sample(&mut conn, 500);
    let samples = calls.sample(&mut conn, STATUS_CALLS);
    println!(
        "{}",
        json!({
            "scenario": "org_quota_status_latency",
            "calls": STATUS_CALLS,
            "latency_ms": percentiles(samples),
            "target_p99_ms": "< 1",
            "setup": { "organizations": orgs, "period_rows": rows, "load_s": round(load_s),
                       "shared_buffers": common::setting(&mut conn, "shared_buffers"),
                       "measured": "client round trip over a Unix socket" },
        })
    );
}

/// Every organization's (`org_id` = `o.id`) or its same-numbered user's (`user_id` = `o.id`)
/// `period`s from the one containing `first` on, `closed` of them closed by rollover and the
/// next one open, each with `requests` and `tokens`. The bounds are computed once per zone and
/// step and joined to the organizations.
fn periods_sql(
    user_id: &str,
    org_id: &str,
    period: &str,
    closed: i64,
    first: &str,
    requests: i64,
    tokens: i64,
) -> String {
    format!(
        "INSERT INTO usage_periods (user_id, org_id, period, period_start, period_end, status,
                                    close_reason, requests, tokens, closed_at)
         SELECT {user_id}, {org_id}, '{period}', b.period_start, b.period_end,
                CASE WHEN b.i = {closed} THEN 'open' ELSE 'closed' END,
                CASE WHEN b.i = {closed} THEN NULL ELSE 'rollover' END, {requests}, {tokens},
                CASE WHEN b.i = {closed} THEN NULL ELSE b.period_end END
           FROM (SELECT z.zone, i, x.period_start, x.period_end
                   FROM (SELECT DISTINCT timezone AS zone FROM organizations) z
                  CROSS JOIN generate_series(0, {closed}) AS i
                  CROSS JOIN LATERAL usage_period_bounds(z.zone, NULL, '{period}',
                                '{first}'::timestamptz + make_interval({period}s => i)) x) b
           JOIN organizations o ON o.timezone = b.zone
          ORDER BY o.id, b.i;"
    )
}

/// org_quota_status calls for reproducible random organizations, each checked for its 12 rows.
struct StatusCalls {
    orgs: i64,
    seed: u64,
    at: DateTime<Utc>,
}

impl StatusCalls {
    fn new(orgs: i64) -> StatusCalls {
        StatusCalls {
            orgs,
            seed: 0x9E37_79B9_7F4A_7C15,
            at: "2026-11-23T12:00:00Z".parse().expect("instant"),
        }
    }

    /// Milliseconds per call, of `n` calls.
    fn sample(&mut self, conn: &mut PgConnection, n: usize) -> Vec<f64> {
        (0..n)
            .map(|_| {
                let org = 1 + (next(&mut self.seed) % self.orgs as u64) as i64;
                let start = Instant::now();
                let rows = status(conn, org, self.at);
                let ms = start.elapsed().as_secs_f64() * 1000.0;
                assert_eq!(rows, 12, "organization {org}");
                ms
            })
            .collect()
    }
}

/// One call as an application makes it: every column of every row, decoded (the display
/// offset `--usage` adds is a constant here).
fn status(conn: &mut PgConnection, org: i64, at: DateTime<Utc>) -> usize {
    diesel::sql_query("SELECT q.*, 0 AS period_end_utc_offset, 0 AS projected_utc_offset FROM org_quota_status($1, $2) q")
        .bind::<BigInt, _>(org)
        .bind::<Timestamptz, _>(at)
        .load::<QuotaRow>(conn)
        .expect("org_quota_status")
        .len()
}
