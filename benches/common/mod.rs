//! What every benchmark starts with: a private PostgreSQL cluster in a temporary directory
//! and an admin connection to it, migrated databases in it, and the numbers it prints.
#![allow(dead_code)]

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use usage_worker::config::{SchemaName, Settings};
use usage_worker::db;
use usage_worker::embedded_pg::{Durability, EmbeddedPg};

/// Fields drop in order: the connection closes, the cluster stops, the directory goes.
pub struct BenchCluster {
    pub admin: PgConnection,
    pub pg: EmbeddedPg,
    _dir: tempfile::TempDir,
}

impl BenchCluster {
    pub fn start(durability: Durability) -> BenchCluster {
        let dir = tempfile::Builder::new()
            .prefix("uw-bench-")
            .tempdir()
            .expect("temp dir");
        let data = dir.path().join("pg");
        let mut pg = EmbeddedPg::start(&data, None, durability)
            .unwrap_or_else(|e| panic!("cannot start PostgreSQL: {e}"));
        let mut admin = db::connect(&pg.url("postgres")).expect("connect");
        // SHARED_BUFFERS (e.g. 6GB, a quarter of this machine's memory) sizes the cache as a
        // server tuned for a large data set would have it; 256MB otherwise.
        if let Ok(size) = std::env::var("SHARED_BUFFERS") {
            admin
                .batch_execute(&format!("ALTER SYSTEM SET shared_buffers = '{size}'"))
                .expect("shared_buffers");
            drop(admin);
            pg.stop().expect("stop PostgreSQL");
            // Stopped already: dropping this value must not stop the restarted server.
            pg.keep_running();
            pg = EmbeddedPg::start(&data, None, durability)
                .unwrap_or_else(|e| panic!("cannot restart PostgreSQL: {e}"));
            admin = db::connect(&pg.url("postgres")).expect("connect");
        }
        BenchCluster {
            admin,
            pg,
            _dir: dir,
        }
    }
}

/// A connection to `url` in the worker's schema (`usage`), as the worker's sessions are.
pub fn connect(url: &str) -> PgConnection {
    db::connect_in(url, &SchemaName::default()).expect("connect")
}

/// Applies the migrations in the worker's schema.
pub fn migrate(conn: &mut PgConnection) {
    db::run_migrations(conn, &SchemaName::default()).expect("migrate");
}

impl BenchCluster {
    /// Creates the database `name`, migrated, and connects to it.
    pub fn migrated_database(&mut self, name: &str) -> PgConnection {
        self.admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create db");
        let mut conn = connect(&self.pg.url(name));
        migrate(&mut conn);
        conn
    }
}

/// A whole number from the environment variable `name`; `default` when unset or not one.
pub fn env_number(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Runs one query returning a single bigint column named `n`.
pub fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql)
        .get_result::<Count>(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .n
}

/// Inserts events numbered `first..first + n`, spread over `users` users and over kinds,
/// request types and models, deterministically; `created_at` is an SQL expression of `g`.
/// Personal usage only.
pub fn insert_events_sql(users: i64, first: i64, n: i64, created_at: &str) -> String {
    insert_events_with_org_sql(users, first, n, created_at, "NULL")
}

/// The user id of event `g` among `users` users, as an SQL expression.
pub fn event_user_sql(users: i64) -> String {
    format!("(1 + (g * 7919) % {users})")
}

/// [`insert_events_sql`] with `org_id`, an SQL expression of `g` (NULL: personal usage).
pub fn insert_events_with_org_sql(
    users: i64,
    first: i64,
    n: i64,
    created_at: &str,
    org_id: &str,
) -> String {
    format!(
        "INSERT INTO usage_events (user_id, org_id, kind, request_type, model, tokens,
                                   prompt_tokens, completion_tokens, messages, bytes, cost,
                                   created_at)
         SELECT {user}, {org_id},
                (ARRAY['ai_response', 'message_sent', 'file_upload', 'image_generation'])[1 + g % 4],
                (ARRAY['chat', 'prompt', ''])[1 + g % 3],
                (ARRAY['gpt-4o', 'gpt-4o-mini', 'claude-sonnet', ''])[1 + (g / 4) % 4],
                g % 3000, g % 1000, g % 3000 - g % 1000,
                (g % 4 = 1)::int, (g % 7) * 1024, (g % 1000) * 0.00001,
                {created_at}
           FROM generate_series({first}::bigint, {last}) g",
        user = event_user_sql(users),
        last = first + n - 1
    )
}

/// Three decimals: what the printed lines carry.
pub fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// p50, p99 and max of latency samples in milliseconds.
pub fn percentiles(mut samples: Vec<f64>) -> serde_json::Value {
    samples.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    serde_json::json!({ "p50": round(pct(0.50)), "p99": round(pct(0.99)), "max": round(pct(1.0)) })
}

/// xorshift64: reproducible random ids without a dependency.
pub fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Default settings pointing at `url`.
pub fn bench_settings(url: &str) -> Settings {
    let mut settings = Settings::default();
    settings.database.url = url.to_string();
    settings
}

/// `UW_BENCH_SCALE` (default 1): multiplies a bench's sizes (event counts, durations), so a
/// quick run is `UW_BENCH_SCALE=0.05 cargo bench --bench …`.
pub fn scale() -> f64 {
    std::env::var("UW_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|s: &f64| *s > 0.0)
        .unwrap_or(1.0)
}

/// A field of `/proc/self/status` in kB (`VmHWM`: peak resident memory, `VmRSS`: current).
pub fn proc_status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Starts the peak resident memory (`VmHWM`) over from the current size.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

#[derive(QueryableByName)]
struct Setting {
    #[diesel(sql_type = diesel::sql_types::Text)]
    value: String,
}

/// The server's current value of the setting `name`, e.g. `shared_buffers`.
pub fn setting(conn: &mut PgConnection, name: &str) -> String {
    diesel::sql_query("SELECT current_setting($1) AS value")
        .bind::<diesel::sql_types::Text, _>(name)
        .get_result::<Setting>(conn)
        .unwrap_or_else(|e| panic!("current_setting({name}): {e}"))
        .value
}
