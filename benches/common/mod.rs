//! What every benchmark starts with: a private PostgreSQL cluster in a temporary directory
//! and an admin connection to it, migrated databases in it, and the numbers it prints.
#![allow(dead_code)]

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use usage_worker::config::Settings;
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
        let pg = EmbeddedPg::start(&dir.path().join("pg"), None, durability)
            .unwrap_or_else(|e| panic!("cannot start PostgreSQL: {e}"));
        let admin = db::connect(&pg.url("postgres")).expect("connect");
        BenchCluster {
            admin,
            pg,
            _dir: dir,
        }
    }
}

impl BenchCluster {
    /// Creates the database `name`, migrated, and connects to it.
    pub fn migrated_database(&mut self, name: &str) -> PgConnection {
        self.admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create db");
        let mut conn = db::connect(&self.pg.url(name)).expect("connect");
        db::run_migrations(&mut conn).expect("migrate");
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

/// Three decimals: what the printed lines carry.
pub fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Default settings pointing at `url`.
pub fn bench_settings(url: &str) -> Settings {
    let mut settings = Settings::default();
    settings.database.url = url.to_string();
    settings
}
