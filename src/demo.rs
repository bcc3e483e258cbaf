//! `--demo`: a private PostgreSQL cluster with a deterministic demo data set.

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;

use crate::config::{Settings, default_demo_dir};
use crate::db::{self, DbError};
use crate::embedded_pg::{Durability, EmbeddedError, EmbeddedPg};

const DEMO_SQL: &str = include_str!("demo.sql");
pub const DEMO_DATABASE: &str = "usage_worker";

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Embedded(#[from] EmbeddedError),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Starts (or reuses) the demo cluster and makes sure its database exists.
pub fn start_cluster(settings: &Settings) -> Result<EmbeddedPg, DemoError> {
    let data_dir = settings
        .embedded
        .data_dir
        .clone()
        .unwrap_or_else(|| default_demo_dir().join("pg"));
    let pg = EmbeddedPg::start(
        &data_dir,
        settings.embedded.pg_bin_dir.as_deref(),
        Durability::Durable,
    )?;
    let mut admin = db::connect(&pg.url("postgres"))?;
    let exists: db::Flag =
        diesel::sql_query("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS value")
            .bind::<diesel::sql_types::Text, _>(DEMO_DATABASE)
            .get_result(&mut admin)
            .map_err(DbError::from)?;
    if !exists.value {
        admin
            .batch_execute(&format!("CREATE DATABASE {DEMO_DATABASE}"))
            .map_err(DbError::from)?;
    }
    Ok(pg)
}

/// Loads the demo data set when the database has no users yet. Returns whether it loaded.
pub fn load_demo_data(conn: &mut PgConnection) -> Result<bool, DbError> {
    let users: db::Count = diesel::sql_query("SELECT count(*) AS n FROM users").get_result(conn)?;
    if users.n > 0 {
        return Ok(false);
    }
    conn.transaction(|conn| conn.batch_execute(DEMO_SQL))?;
    Ok(true)
}
