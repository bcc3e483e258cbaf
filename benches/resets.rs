//! Quota period benchmarks. Prints one JSON line per scenario.
//!
//! 1. `reset_daily_rollover`: USERS users (100,000 by default) whose daily periods end at the
//!    same instant; the `reset-daily` job (close + reconcile against raw events + limits
//!    snapshot + open successors) against hand-written SQL doing the same work in one
//!    statement batch, on identical copies of the database in the same run.
//! 2. `quota_status_latency`: `quota_status(user_id)` for random users of USERS, each with 24
//!    closed monthly periods, 14 closed daily periods and the open ones: p50 / p99 / max.
//! 3. `quota_status_search_path`: the same calls with a search_path pinned on the function
//!    (`SET search_path = <schema>, pg_temp`) and without, in alternating blocks.
//!
//! `cargo bench --bench resets` (USERS=20000 for a quick look; SCENARIO=rollover or status for
//! one of the two; DAYS=30 for 30 closed daily periods instead of 14: with USERS=1000000, the
//! 54 million period rows of a million users).

mod common;

use common::{BenchCluster, next, percentiles, round};

use std::time::Instant;

use chrono::{DateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Timestamptz};
use serde_json::json;
use usage_worker::embedded_pg::Durability;
use usage_worker::jobs::aggregate::{self, Limit};
use usage_worker::jobs::{Ctx, JobKind, RunOpts};
use usage_worker::quota_report::QuotaRow;

const EVENTS_PER_USER: i64 = 5;
const STATUS_CALLS: usize = 5_000;

fn main() {
    let users = common::env_number("USERS", 100_000);
    let mut cluster = common::BenchCluster::start(Durability::Throwaway);

    let only = std::env::var("SCENARIO").unwrap_or_default();
    if only.is_empty() || only == "rollover" {
        rollover(&mut cluster, users);
    }
    if only.is_empty() || only == "status" {
        status_latency(&mut cluster, users);
    }
}

fn rollover(cluster: &mut BenchCluster, users: i64) {
    let now: DateTime<Utc> = "2027-01-11T00:00:00Z".parse().expect("instant");
    let mut conn = cluster.migrated_database("bench_job");
    let pg = &cluster.pg;
    let load = Instant::now();
    conn.batch_execute(&format!(
        "INSERT INTO plans (id, name) VALUES (1, 'free');
         INSERT INTO plan_limits (plan_id, metric, period, kind, max_value)
         VALUES (1, 'tokens', 'day', '', 100000), (1, 'requests', 'day', 'image_generation', 20);
         INSERT INTO users (id, email, plan_id) SELECT g, 'u' || g || '@example.com', 1
           FROM generate_series(1, {users}) AS g;
         CREATE TABLE usage_events_2027_01 PARTITION OF usage_events
             FOR VALUES FROM ('2027-01-01T00:00:00Z') TO ('2027-02-01T00:00:00Z');
         INSERT INTO usage_events (user_id, kind, tokens, cost, created_at)
         SELECT u, CASE WHEN n % 2 = 0 THEN 'ai_response' ELSE 'image_generation' END, 100 + n, 0.01,
                '2027-01-10T00:00:00Z'::timestamptz + make_interval(secs => (u * 7 + n * 3600) % 86400)
           FROM generate_series(1, {users}) AS u CROSS JOIN generate_series(1, {EVENTS_PER_USER}) AS n;"
    ))
    .expect("load users and events");
    conn.batch_execute("ANALYZE").expect("analyze");
    let load_s = load.elapsed().as_secs_f64();

    // The aggregate transaction: every event into the daily summary and into its day and
    // month period; the period step's own time is reported.
    let (step, _) =
        aggregate::transaction(&mut conn, i64::MAX, Limit::Horizon { also_below: None })
            .expect("aggregate");
    let add_s = step.period_step.as_secs_f64();
    conn.batch_execute("VACUUM ANALYZE usage_periods, usage_period_kind_totals, usage_events")
        .expect("vacuum");
    drop(conn);
    cluster
        .admin
        .batch_execute("CREATE DATABASE bench_raw TEMPLATE bench_job")
        .expect("copy database");

    let ctx = Ctx::new(
        std::sync::Arc::new(common::bench_settings(&pg.url("bench_job"))),
        pg.url("bench_job"),
    );
    let mut conn = common::connect(&pg.url("bench_job"));
    let job = Instant::now();
    let report = JobKind::ResetDaily
        .run(&ctx, &mut conn, now, &RunOpts::default())
        .expect("reset-daily");
    let job_s = job.elapsed().as_secs_f64();
    assert_eq!(report.details["closed"], users, "{}", report.details);
    assert_eq!(report.details["opened"], users, "{}", report.details);

    // The same work by hand: recompute totals from the events, close, snapshot limits,
    // replace per-kind totals, open the next day. UTC only, no drift report, no batching.
    let mut raw = common::connect(&pg.url("bench_raw"));
    let hand = Instant::now();
    raw.transaction(|c| {
        c.batch_execute(
            "CREATE TEMP TABLE sums ON COMMIT DROP AS
             SELECT p.user_id, p.period_start, e.kind, count(*) AS requests, sum(e.messages) AS messages,
                    sum(e.tokens) AS tokens, sum(e.bytes) AS bytes, sum(e.cost) AS cost
               FROM usage_periods p
               JOIN usage_events e ON e.user_id = p.user_id AND e.created_at >= p.period_start
                                  AND e.created_at < p.period_end
              WHERE p.status = 'open' AND p.period = 'day' AND p.period_end <= '2027-01-11T00:00:00Z'
              GROUP BY 1, 2, 3;
             UPDATE usage_period_kind_totals k
                SET requests = s.requests, messages = s.messages, tokens = s.tokens, bytes = s.bytes, cost = s.cost
               FROM sums s
              WHERE k.user_id = s.user_id AND k.period = 'day' AND k.period_start = s.period_start AND k.kind = s.kind;
             UPDATE usage_periods p
                SET status = 'closed', close_reason = 'rollover', closed_at = '2027-01-11T00:00:00Z',
                    requests = t.requests, messages = t.messages, tokens = t.tokens, bytes = t.bytes, cost = t.cost,
                    plan_id = u.plan_id,
                    limits = (SELECT jsonb_agg(jsonb_build_object('metric', l.metric, 'kind', l.kind, 'max_value', l.max_value))
                                FROM plan_limits l WHERE l.plan_id = u.plan_id AND l.period = 'day')
               FROM (SELECT user_id, period_start, sum(requests) AS requests, sum(messages) AS messages,
                            sum(tokens) AS tokens, sum(bytes) AS bytes, sum(cost) AS cost
                       FROM sums GROUP BY 1, 2) t
               JOIN users u ON u.id = t.user_id
              WHERE p.user_id = t.user_id AND p.period = 'day' AND p.period_start = t.period_start;
             INSERT INTO usage_periods (user_id, period, period_start, period_end)
             SELECT DISTINCT user_id, 'day', period_start + interval '1 day', period_start + interval '2 days'
               FROM sums;",
        )
    })
    .expect("hand-written reset");
    let raw_s = hand.elapsed().as_secs_f64();

    let setup =
        json!({ "users": users, "events": users * EVENTS_PER_USER, "load_s": round(load_s) });
    println!(
        "{}",
        json!({
            "scenario": "aggregate_add_batch_into_periods",
            "seconds": round(add_s),
            "events_per_second": (users * EVENTS_PER_USER) as f64 / add_s.max(1e-6),
            "setup": setup,
        })
    );
    println!(
        "{}",
        json!({
            "scenario": "reset_daily_rollover",
            "job_seconds": round(job_s),
            "raw_sql_seconds": round(raw_s),
            "ratio": round(job_s / raw_s.max(1e-6)),
            "target_ratio": "<= 1.5",
            "batches": report.details["batches"],
            "setup": setup,
        })
    );
}

fn status_latency(cluster: &mut BenchCluster, users: i64) {
    // Closed daily periods before the open one of the instant measured (DAYS, 14 by default;
    // 30 with 24 months gives the million-user shape of 54 periods per user).
    let days = common::env_number("DAYS", 14);
    let first_day = (StatusCalls::new(users).at - chrono::Duration::days(days))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let mut conn = cluster.migrated_database("bench_status");
    let load = Instant::now();
    // Zones with and without DST; months closed from 2024-12 to 2026-11, days for two weeks.
    conn.batch_execute(&format!(
        "INSERT INTO plans (id, name) VALUES (1, 'free');
         INSERT INTO plan_limits (plan_id, metric, period, kind, max_value)
         VALUES (1, 'tokens', 'month', '', 100000), (1, 'messages', 'month', '', 100),
                (1, 'requests', 'day', 'image_generation', 20), (1, 'bytes', 'month', 'file_upload', 104857600);
         INSERT INTO users (id, email, plan_id, timezone)
         SELECT g, 'u' || g || '@example.com', 1,
                (ARRAY['UTC', 'Europe/Berlin', 'America/New_York', 'Asia/Kolkata'])[1 + g % 4]
           FROM generate_series(1, {users}) AS g;
         {months}
         {days}
         INSERT INTO usage_period_kind_totals (user_id, period, period_start, kind, requests, tokens)
         SELECT user_id, period, period_start, 'image_generation', 3, 0
           FROM usage_periods WHERE status = 'open';
         CREATE TABLE usage_events_2026_11 PARTITION OF usage_events
             FOR VALUES FROM ('2026-11-01T00:00:00Z') TO ('2026-12-01T00:00:00Z');
         {pending}",
        months = periods_sql("month", 24, "2024-12-15T00:00:00Z", 100, 5000),
        days = periods_sql("day", days, &first_day, 5, 200),
        pending = pending_sql(users),
    ))
    .expect("load periods");
    conn.batch_execute("VACUUM ANALYZE").expect("vacuum");
    let load_s = load.elapsed().as_secs_f64();
    let rows: i64 = common::count(&mut conn, "SELECT count(*) AS n FROM usage_periods");

    let pending: i64 = common::count(
        &mut conn,
        "SELECT count(*) AS n FROM usage_events
          WHERE recorded_xid >= (SELECT xid FROM aggregation_watermark)",
    );

    let setup = json!({ "users": users, "period_rows": rows, "pending_events": pending,
                        "load_s": round(load_s),
                        "shared_buffers": common::setting(&mut conn, "shared_buffers"),
                        "measured": "client round trip over a Unix socket" });
    let mut calls = StatusCalls::new(users);
    // PASSES (default 1): the measurement again on the same data, e.g. a second run after a
    // load of a million users that takes a quarter of an hour.
    conn.batch_execute(PREPARE_CALLS).expect("prepare");
    for pass in 1..=common::env_number("PASSES", 1) {
        for prepared in [false, true] {
            calls.prepared = prepared;
            let statements = if prepared {
                "prepared once"
            } else {
                "parsed and planned each call"
            };
            // Warm the caches the way a running system has them.
            calls.sample(&mut conn, 500);
            let samples = calls.sample(&mut conn, STATUS_CALLS);
            calls.check(&mut conn, 500);
            let (check_samples, fitting) = calls.check(&mut conn, STATUS_CALLS);
            println!(
                "{}",
                json!({
                    "scenario": "usage_check_latency",
                    "pass": pass,
                    "statements": statements,
                    "calls": STATUS_CALLS,
                    "fitting": fitting,
                    "latency_ms": percentiles(check_samples),
                    "target_p99_ms": "< 1",
                    "setup": &setup,
                })
            );
            println!(
                "{}",
                json!({
                    "scenario": "quota_status_latency",
                    "pass": pass,
                    "statements": statements,
                    "calls": STATUS_CALLS,
                    "search_path": function_search_path(&mut conn),
                    "latency_ms": percentiles(samples),
                    "target_p99_ms": "< 1",
                    "setup": &setup,
                })
            );
        }
    }
    calls.prepared = false;

    // The cost of a search_path pinned on the function (SET clause): blocks of calls with and
    // without it alternate, so both see the same load on the machine.
    let (mut pinned, mut unpinned) = (Vec::new(), Vec::new());
    for block in 0..10 {
        let pin = block % 2 == 0;
        conn.batch_execute(if pin {
            PIN_SEARCH_PATH
        } else {
            UNPIN_SEARCH_PATH
        })
        .expect("alter quota_status");
        // The first calls after ALTER FUNCTION plan the function's statements again.
        calls.sample(&mut conn, 50);
        let block_samples = calls.sample(&mut conn, STATUS_CALLS / 10);
        if pin { &mut pinned } else { &mut unpinned }.extend(block_samples);
    }
    println!(
        "{}",
        json!({
            "scenario": "quota_status_search_path",
            "calls_each": pinned.len(),
            "pinned_ms": percentiles(pinned),
            "unpinned_ms": percentiles(unpinned),
            "setup": setup,
        })
    );
}

const PIN_SEARCH_PATH: &str = "DO $$ BEGIN
    EXECUTE format('ALTER FUNCTION quota_status(bigint, timestamptz) SET search_path = %I, pg_temp',
                   current_schema());
END $$";
const UNPIN_SEARCH_PATH: &str =
    "ALTER FUNCTION quota_status(bigint, timestamptz) RESET search_path";

/// quota_status calls for reproducible random users, each checked for its 12 rows.
struct StatusCalls {
    users: i64,
    seed: u64,
    at: DateTime<Utc>,
    /// Calls through statements prepared once per session (PREPARE, then EXECUTE), as an
    /// application's driver or pool does; otherwise each call is parsed and planned again.
    prepared: bool,
}

/// The two calls, prepared in the session for `StatusCalls { prepared: true, .. }`.
const PREPARE_CALLS: &str =
    "PREPARE status_call (bigint, timestamptz) AS
         SELECT q.*, 0 AS period_end_utc_offset, 0 AS projected_utc_offset FROM quota_status($1, $2) q;
     PREPARE check_call (bigint, timestamptz) AS
         SELECT fits FROM usage_check(p_user_id => $1, p_kind => 'image_generation', p_created_at => $2)";

impl StatusCalls {
    fn new(users: i64) -> StatusCalls {
        StatusCalls {
            users,
            seed: 0x9E37_79B9_7F4A_7C15,
            at: "2026-11-23T12:00:00Z".parse().expect("instant"),
            prepared: false,
        }
    }

    /// Milliseconds per usage_check call (an image generation), of `n` calls, and how many
    /// of them fit.
    fn check(&mut self, conn: &mut PgConnection, n: usize) -> (Vec<f64>, usize) {
        let mut fitting = 0;
        let samples = (0..n)
            .map(|_| {
                let user = 1 + (next(&mut self.seed) % self.users as u64) as i64;
                let start = Instant::now();
                let fits = if self.prepared {
                    diesel::sql_query(format!(
                        "EXECUTE check_call({user}, '{}')",
                        self.at.to_rfc3339()
                    ))
                    .load::<Fits>(conn)
                } else {
                    diesel::sql_query(
                        "SELECT fits FROM usage_check(p_user_id => $1, p_kind => 'image_generation',
                                                      p_created_at => $2)",
                    )
                    .bind::<BigInt, _>(user)
                    .bind::<Timestamptz, _>(self.at)
                    .load::<Fits>(conn)
                }
                .expect("usage_check");
                let ms = start.elapsed().as_secs_f64() * 1000.0;
                assert_eq!(fits.len(), 1, "user {user}");
                fitting += usize::from(fits[0].fits);
                ms
            })
            .collect();
        (samples, fitting)
    }

    /// Milliseconds per call, of `n` calls.
    fn sample(&mut self, conn: &mut PgConnection, n: usize) -> Vec<f64> {
        (0..n)
            .map(|_| {
                let user = 1 + (next(&mut self.seed) % self.users as u64) as i64;
                let start = Instant::now();
                let rows = status(conn, user, self.at, self.prepared);
                let ms = start.elapsed().as_secs_f64() * 1000.0;
                assert_eq!(rows, 12, "user {user}");
                ms
            })
            .collect()
    }
}

/// A minute of events at 10,000 a second, not yet aggregated (the watermark is below them),
/// of every kind the plan limits, spread over the users: six per user.
fn pending_sql(users: i64) -> String {
    format!(
        "INSERT INTO usage_events (user_id, kind, tokens, messages, created_at)
         SELECT 1 + (g::bigint * 7919) % {users},
                (ARRAY['ai_response', 'image_generation', 'message_sent'])[1 + g % 3],
                100, g % 2, '2026-11-23T11:59:00Z'::timestamptz + make_interval(secs => g % 60)
           FROM generate_series(1, {users} * 6) AS g;"
    )
}

/// Every user's `period`s from the one containing `first` on, `closed` of them closed
/// by rollover and the next one open, each with `requests` and `tokens`. The bounds are
/// computed once per zone and step and joined to the users, so a million users load in
/// minutes.
fn periods_sql(period: &str, closed: i64, first: &str, requests: i64, tokens: i64) -> String {
    format!(
        "INSERT INTO usage_periods (user_id, period, period_start, period_end, status, close_reason,
                                    requests, tokens, closed_at)
         SELECT u.id, '{period}', b.period_start, b.period_end,
                CASE WHEN b.i = {closed} THEN 'open' ELSE 'closed' END,
                CASE WHEN b.i = {closed} THEN NULL ELSE 'rollover' END, {requests}, {tokens},
                CASE WHEN b.i = {closed} THEN NULL ELSE b.period_end END
           FROM (SELECT z.zone, i, x.period_start, x.period_end
                   FROM (SELECT DISTINCT timezone AS zone FROM users) z
                  CROSS JOIN generate_series(0, {closed}) AS i
                  CROSS JOIN LATERAL usage_period_bounds(z.zone, NULL, '{period}',
                                '{first}'::timestamptz + make_interval({period}s => i)) x) b
           JOIN users u ON u.timezone = b.zone
          ORDER BY u.id, b.i;"
    )
}

#[derive(QueryableByName)]
struct Fits {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    fits: bool,
}

#[derive(QueryableByName)]
struct Config {
    #[diesel(sql_type = diesel::sql_types::Text)]
    config: String,
}

/// The search_path pinned on quota_status, or "none".
fn function_search_path(conn: &mut PgConnection) -> String {
    diesel::sql_query(
        "SELECT COALESCE((SELECT c FROM unnest(proconfig) c WHERE c LIKE 'search_path=%'), 'none') AS config
           FROM pg_proc WHERE oid = 'quota_status(bigint, timestamptz)'::regprocedure",
    )
    .get_result::<Config>(conn)
    .expect("quota_status settings")
    .config
}

/// One call as an application makes it: every column of every row, decoded (the display
/// offset `--usage` adds is a constant here).
fn status(conn: &mut PgConnection, user: i64, at: DateTime<Utc>, prepared: bool) -> usize {
    if prepared {
        return diesel::sql_query(format!(
            "EXECUTE status_call({user}, '{}')",
            at.to_rfc3339()
        ))
        .load::<QuotaRow>(conn)
        .expect("quota_status")
        .len();
    }
    diesel::sql_query("SELECT q.*, 0 AS period_end_utc_offset, 0 AS projected_utc_offset FROM quota_status($1, $2) q")
        .bind::<BigInt, _>(user)
        .bind::<Timestamptz, _>(at)
        .load::<QuotaRow>(conn)
        .expect("quota_status")
        .len()
}
