//! Benchmark of the `aggregate` job — daily summary and quota periods in one transaction — on
//! a private throwaway cluster. Prints one JSON line per scenario:
//! - `from_empty`: an empty watermark, against the raw lower bound of the same work: three
//!   `INSERT … SELECT … GROUP BY` statements over the same events into empty tables (the daily
//!   summary by user-local day, kind, request type and model; the usage per user, local day
//!   and kind; the usage per user, local month and kind). Target ratio ≤ 1.5. Three data sets:
//!   `30_days` (1,000,000 events of 10,000 users over 30 days), `27_months` (1,350,000
//!   events of 100 users over 27 months) and `30_days_orgs` (`30_days` with half the events
//!   spent in 1,000 organizations in other zones, each user a member of two; the raw bound
//!   then groups by organization and its local day too). Target for `30_days_orgs`: a ratio
//!   at most 10 % above `30_days`'s, printed as `orgs_ratio` when both run.
//! - `incremental`: 10,000 new events on top of 1,000,000 and of 10,000,000 aggregated ones.
//!   Target: the two cost about the same (ratio < 2).
//! - `backfill`: a 10,000,000-event backlog aggregated in bounded transactions: events per
//!   second, the peak resident memory of this process (the job runs in it; target < 100 MB)
//!   and PostgreSQL's temporary file bytes (`pg_stat_database.temp_bytes`) during the run.
//!
//! `cargo bench --bench aggregate`. `UW_BENCH_SCALE` (default 1) multiplies every event
//! count; `UW_BENCH_ONLY=30_days,30_days_orgs,27_months,backfill` picks scenarios (the
//! incremental ratio needs `30_days` and `backfill`).

mod common;

use common::round;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Months, Utc};
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use serde_json::json;
use usage_worker::embedded_pg::{Durability, EmbeddedPg};
use usage_worker::jobs::{Ctx, JobKind, RunOpts};

/// Events per inserting transaction while loading: a backlog of many small writers.
const LOAD_CHUNK: i64 = 10_000;
const NEW_EVENTS: i64 = 10_000;
/// Organizations of the `30_days_orgs` data set.
const ORGS: i64 = 1_000;

/// The events of one benchmark database: spread evenly over `users` and `days` days from
/// `start`, deterministic; with `orgs` organizations, half the events are spent in them.
struct DataSet {
    name: &'static str,
    events: i64,
    users: i64,
    orgs: i64,
    start: &'static str,
    days: i64,
}

impl DataSet {
    fn start(&self) -> DateTime<Utc> {
        self.start.parse().unwrap_or_default()
    }
}

fn main() {
    let scale = common::scale();
    let only = std::env::var("UW_BENCH_ONLY").unwrap_or_default();
    let wants = |name: &str| only.is_empty() || only.split(',').any(|s| s.trim() == name);
    let scaled = |n: f64| ((n * scale) as i64).max(NEW_EVENTS);

    let mut cluster = common::BenchCluster::start(Durability::Throwaway);
    let pg = &cluster.pg;
    let admin = &mut cluster.admin;

    let mut small_incremental = None;
    let mut personal_ratio = None;
    if wants("30_days") {
        let set = DataSet {
            name: "30_days",
            events: scaled(1_000_000.0),
            users: 10_000,
            orgs: 0,
            start: "2026-10-01T00:00:00Z",
            days: 30,
        };
        let (ctx, mut conn) = database(pg, admin, &set);
        personal_ratio = Some(from_empty(&ctx, &mut conn, &set));
        small_incremental = Some(incremental(&ctx, &mut conn, &set, set.events));
        drop(conn);
        drop_database(admin, set.name);
    }
    if wants("30_days_orgs") {
        let set = DataSet {
            name: "30_days_orgs",
            events: scaled(1_000_000.0),
            users: 10_000,
            orgs: ORGS,
            start: "2026-10-01T00:00:00Z",
            days: 30,
        };
        let (ctx, mut conn) = database(pg, admin, &set);
        let orgs_ratio = from_empty(&ctx, &mut conn, &set);
        if let Some(personal) = personal_ratio {
            println!(
                "{}",
                json!({
                    "scenario": "orgs_ratio",
                    "personal_ratio": round(personal),
                    "orgs_ratio": round(orgs_ratio),
                    "relative": round(orgs_ratio / personal),
                    "target": "relative <= 1.1",
                })
            );
        }
        drop(conn);
        drop_database(admin, set.name);
    }
    if wants("27_months") {
        let set = DataSet {
            name: "27_months",
            events: scaled(1_350_000.0),
            users: 100,
            orgs: 0,
            start: "2024-08-01T00:00:00Z",
            days: 821,
        };
        let (ctx, mut conn) = database(pg, admin, &set);
        from_empty(&ctx, &mut conn, &set);
        drop(conn);
        drop_database(admin, set.name);
    }
    if wants("backfill") {
        let set = DataSet {
            name: "backfill",
            events: scaled(10_000_000.0),
            users: 10_000,
            orgs: 0,
            start: "2026-10-01T00:00:00Z",
            days: 30,
        };
        let (ctx, mut conn) = database(pg, admin, &set);
        backfill(&ctx, &mut conn, &set);
        let large = incremental(&ctx, &mut conn, &set, set.events);
        if let Some(small) = small_incremental {
            println!(
                "{}",
                json!({
                    "scenario": "incremental_ratio",
                    "new_events": NEW_EVENTS,
                    "on_small_s": round(small),
                    "on_large_s": round(large),
                    "ratio": round(large / small),
                    "target": "ratio < 2",
                })
            );
        }
        drop(conn);
        drop_database(admin, set.name);
    }
}

fn timed(f: impl FnOnce()) -> f64 {
    let started = Instant::now();
    f();
    started.elapsed().as_secs_f64()
}

/// The raw lower bound, then the job on the same events from an empty watermark; returns
/// the ratio of the two.
fn from_empty(ctx: &Ctx, conn: &mut PgConnection, set: &DataSet) -> f64 {
    let raw = if set.orgs > 0 {
        RAW_LOWER_BOUND_ORGS
    } else {
        RAW_LOWER_BOUND
    };
    let raw_seconds = timed(|| {
        conn.batch_execute(raw).expect("raw lower bound");
    });
    conn.batch_execute("DROP TABLE raw_daily, raw_day_kind, raw_month_kind")
        .expect("drop raw tables");
    let (aggregate_seconds, transactions) = run_aggregate(ctx, conn);
    println!(
        "{}",
        json!({
            "scenario": "from_empty",
            "data_set": set.name,
            "events": set.events, "users": set.users, "orgs": set.orgs, "days": set.days,
            "aggregate_s": round(aggregate_seconds),
            "raw_three_insert_select_group_by_s": round(raw_seconds),
            "ratio": round(aggregate_seconds / raw_seconds),
            "transactions": transactions,
            "periods": count(conn, "SELECT count(*) AS n FROM usage_periods"),
            "target": "ratio <= 1.5",
        })
    );
    aggregate_seconds / raw_seconds
}

/// The backlog of `set` aggregated from an empty watermark, with memory and temp files.
fn backfill(ctx: &Ctx, conn: &mut PgConnection, set: &DataSet) {
    let temp_before = temp_bytes(conn);
    common::reset_peak_rss();
    let rss_before = common::proc_status_kb("VmRSS:");
    let (seconds, transactions) = run_aggregate(ctx, conn);
    let peak = common::proc_status_kb("VmHWM:");
    let temp_after = temp_bytes(conn);
    println!(
        "{}",
        json!({
            "scenario": "backfill",
            "events": set.events, "users": set.users, "days": set.days,
            "aggregate_s": round(seconds),
            "events_per_s": (set.events as f64 / seconds).round(),
            "transactions": transactions,
            "batch_events": ctx.settings.aggregate.batch_events,
            "rss_before_kb": rss_before,
            "peak_rss_kb": peak,
            "peak_rss_target": "< 100 MB",
            "pg_temp_bytes": temp_after - temp_before,
        })
    );
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql)
        .get_result::<Count>(conn)
        .expect("count")
        .n
}

/// This database's temporary file bytes so far, once this backend's statistics are flushed.
fn temp_bytes(conn: &mut PgConnection) -> i64 {
    conn.batch_execute("SELECT pg_stat_force_next_flush()")
        .expect("flush statistics");
    let read = |conn: &mut PgConnection| {
        conn.batch_execute("SELECT pg_stat_clear_snapshot()")
            .expect("clear snapshot");
        count(
            conn,
            "SELECT temp_bytes AS n FROM pg_stat_database WHERE datname = current_database()",
        )
    };
    // Flushed statistics become visible within a second or so; wait until the value holds.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = read(conn);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        let now = read(conn);
        if now == last {
            break;
        }
        last = now;
    }
    last
}

fn run_aggregate(ctx: &Ctx, conn: &mut PgConnection) -> (f64, serde_json::Value) {
    let mut transactions = serde_json::Value::Null;
    let seconds = timed(|| {
        let report = JobKind::Aggregate
            .run(ctx, conn, Utc::now(), &RunOpts::default())
            .expect("aggregate run");
        transactions = report.details["transactions"].clone();
    });
    (seconds, transactions)
}

/// Adds NEW_EVENTS events in ten transactions and times the run that aggregates them.
fn incremental(ctx: &Ctx, conn: &mut PgConnection, set: &DataSet, existing: i64) -> f64 {
    for i in 0..10 {
        conn.batch_execute(&load_sql(
            set,
            existing + i * NEW_EVENTS / 10,
            NEW_EVENTS / 10,
        ))
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

fn drop_database(admin: &mut PgConnection, name: &str) {
    admin
        .batch_execute(&format!("DROP DATABASE bench_{name}"))
        .expect("drop database");
}

fn database(pg: &EmbeddedPg, admin: &mut PgConnection, set: &DataSet) -> (Arc<Ctx>, PgConnection) {
    admin
        .batch_execute(&format!("CREATE DATABASE bench_{}", set.name))
        .expect("create database");
    let url = pg.url(&format!("bench_{}", set.name));
    let mut conn = common::connect(&url);
    common::migrate(&mut conn);
    let ctx = Arc::new(Ctx::new(Arc::new(common::bench_settings(&url)), url));
    // The monthly partitions of the whole range, as the partitions job keeps them.
    let months = set.days / 28 + 1;
    for m in 0..months {
        let month = set.start().checked_add_months(Months::new(m as u32));
        JobKind::Partitions
            .run(
                &ctx,
                &mut conn,
                month.unwrap_or_default(),
                &RunOpts::default(),
            )
            .expect("partitions");
    }
    // Ten zones (Lord Howe's half-hour DST included); every fourth user has a billing anchor.
    conn.batch_execute(&format!(
        "INSERT INTO users (id, email, timezone, billing_anchor_day)
         SELECT g, 'user' || g || '@example.com',
                (ARRAY['UTC', 'Europe/Berlin', 'America/New_York', 'Asia/Kolkata',
                       'Australia/Sydney', 'America/Los_Angeles', 'Asia/Tokyo',
                       'Europe/London', 'Australia/Lord_Howe', 'America/Sao_Paulo'])[1 + g % 10],
                CASE WHEN g % 4 = 0 THEN 1 + g % 31 END
           FROM generate_series(1, {}) g",
        set.users
    ))
    .expect("users");
    if set.orgs > 0 {
        add_organizations(&mut conn, set);
    }
    let started = Instant::now();
    let mut loaded = 0;
    while loaded < set.events {
        let n = LOAD_CHUNK.min(set.events - loaded);
        conn.batch_execute(&load_sql(set, loaded, n))
            .expect("load events");
        loaded += n;
    }
    conn.batch_execute("VACUUM ANALYZE").expect("vacuum");
    eprintln!(
        "{}: loaded {} events in {:.1}s",
        set.name,
        set.events,
        started.elapsed().as_secs_f64()
    );
    (ctx, conn)
}

/// Organizations in ten zones other than their members' (every third with a billing anchor);
/// each user is a member of two of them.
fn add_organizations(conn: &mut PgConnection, set: &DataSet) {
    conn.batch_execute(&format!(
        "INSERT INTO organizations (id, name, timezone, billing_anchor_day)
         SELECT g, 'org ' || g,
                (ARRAY['Asia/Singapore', 'America/Chicago', 'Europe/Paris', 'Asia/Kathmandu',
                       'America/Denver', 'Pacific/Auckland', 'Africa/Lagos', 'America/St_Johns',
                       'Europe/Helsinki', 'Asia/Dubai'])[1 + g % 10],
                CASE WHEN g % 3 = 0 THEN 1 + g % 31 END
           FROM generate_series(1, {orgs}) g;
         INSERT INTO organization_members (org_id, user_id)
         SELECT o, u
           FROM generate_series(1, {users}) u
          CROSS JOIN LATERAL (VALUES (1 + u % {orgs}), (1 + (u * 7) % {orgs})) m (o)
         ON CONFLICT DO NOTHING",
        orgs = set.orgs,
        users = set.users
    ))
    .expect("organizations");
}

/// Events number `first..first + n`: spread over users, the data set's days, kinds and
/// models, deterministic; with organizations, half of them in one of the user's two.
fn load_sql(set: &DataSet, first: i64, n: i64) -> String {
    let created_at = format!(
        "'{}'::timestamptz + ((g * 104729) % ({} * 86400)) * interval '1 second'",
        set.start, set.days
    );
    let user = common::event_user_sql(set.users);
    let org_id = if set.orgs > 0 {
        format!(
            "CASE (g / 3) % 4 WHEN 0 THEN 1 + {user} % {orgs} WHEN 1 THEN 1 + ({user} * 7) % {orgs} END",
            orgs = set.orgs
        )
    } else {
        "NULL".to_string()
    };
    common::insert_events_with_org_sql(set.users, first, n, &created_at, &org_id)
}

/// The lower bound: the same sums, one statement per book, into empty tables with the keys
/// of the real ones.
const RAW_LOWER_BOUND: &str = "
    CREATE TABLE raw_daily (LIKE token_usage_daily INCLUDING ALL);
    INSERT INTO raw_daily
    SELECT e.user_id, (e.created_at AT TIME ZONE u.timezone)::date, e.kind, e.request_type,
           e.model, count(*), sum(e.tokens), sum(e.prompt_tokens), sum(e.completion_tokens),
           sum(e.messages), sum(e.bytes), sum(e.cost)
      FROM usage_events e
      JOIN users u ON u.id = e.user_id
     GROUP BY 1, 2, 3, 4, 5;
    CREATE TABLE raw_day_kind (user_id bigint, day date, kind text, requests bigint,
                               messages bigint, tokens bigint, bytes bigint, cost numeric,
                               PRIMARY KEY (user_id, day, kind));
    INSERT INTO raw_day_kind
    SELECT e.user_id, (e.created_at AT TIME ZONE u.timezone)::date, e.kind, count(*),
           sum(e.messages), sum(e.tokens), sum(e.bytes), sum(e.cost)
      FROM usage_events e
      JOIN users u ON u.id = e.user_id
     GROUP BY 1, 2, 3;
    CREATE TABLE raw_month_kind (user_id bigint, month date, kind text, requests bigint,
                                 messages bigint, tokens bigint, bytes bigint, cost numeric,
                                 PRIMARY KEY (user_id, month, kind));
    INSERT INTO raw_month_kind
    SELECT e.user_id, date_trunc('month', e.created_at AT TIME ZONE u.timezone)::date, e.kind,
           count(*), sum(e.messages), sum(e.tokens), sum(e.bytes), sum(e.cost)
      FROM usage_events e
      JOIN users u ON u.id = e.user_id
     GROUP BY 1, 2, 3;";

/// The lower bound with organizations: the same three statements, each grouping by the
/// event's subject (the organization, or the user for personal usage) and its local day.
const RAW_LOWER_BOUND_ORGS: &str = "
    CREATE TABLE raw_daily (LIKE token_usage_daily INCLUDING ALL);
    INSERT INTO raw_daily (user_id, day, kind, request_type, model, org_id, events, tokens,
                           prompt_tokens, completion_tokens, messages, bytes, cost)
    SELECT e.user_id, (e.created_at AT TIME ZONE COALESCE(o.timezone, u.timezone))::date,
           e.kind, e.request_type, e.model, e.org_id, count(*), sum(e.tokens),
           sum(e.prompt_tokens), sum(e.completion_tokens), sum(e.messages), sum(e.bytes),
           sum(e.cost)
      FROM usage_events e
      JOIN users u ON u.id = e.user_id
      LEFT JOIN organizations o ON o.id = e.org_id
     GROUP BY 1, 2, 3, 4, 5, 6;
    CREATE TABLE raw_day_kind (user_id bigint, org_id bigint, day date, kind text,
                               requests bigint, messages bigint, tokens bigint, bytes bigint,
                               cost numeric, PRIMARY KEY (user_id, org_id, day, kind));
    INSERT INTO raw_day_kind
    SELECT CASE WHEN e.org_id IS NULL THEN e.user_id ELSE 0 END, COALESCE(e.org_id, 0),
           (e.created_at AT TIME ZONE COALESCE(o.timezone, u.timezone))::date, e.kind,
           count(*), sum(e.messages), sum(e.tokens), sum(e.bytes), sum(e.cost)
      FROM usage_events e
      JOIN users u ON u.id = e.user_id
      LEFT JOIN organizations o ON o.id = e.org_id
     GROUP BY 1, 2, 3, 4;
    CREATE TABLE raw_month_kind (user_id bigint, org_id bigint, month date, kind text,
                                 requests bigint, messages bigint, tokens bigint, bytes bigint,
                                 cost numeric, PRIMARY KEY (user_id, org_id, month, kind));
    INSERT INTO raw_month_kind
    SELECT CASE WHEN e.org_id IS NULL THEN e.user_id ELSE 0 END, COALESCE(e.org_id, 0),
           date_trunc('month', e.created_at AT TIME ZONE COALESCE(o.timezone, u.timezone))::date,
           e.kind, count(*), sum(e.messages), sum(e.tokens), sum(e.bytes), sum(e.cost)
      FROM usage_events e
      JOIN users u ON u.id = e.user_id
      LEFT JOIN organizations o ON o.id = e.org_id
     GROUP BY 1, 2, 3, 4;";
