//! `--demo`: a private PostgreSQL cluster with a deterministic demo data set.

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;

use crate::config::{Settings, default_demo_dir};
use crate::db::{self, DbError};
use crate::embedded_pg::{Durability, EmbeddedError, EmbeddedPg};

const DATABASE_EXISTS_SQL: &str = include_str!("sql/demo_database_exists.sql");
const PLAN_LIMITS_SQL: &str = include_str!("sql/demo_plan_limits.sql");
const PRICES_SQL: &str = include_str!("sql/demo_prices.sql");
const USERS_SQL: &str = include_str!("sql/demo_users.sql");
const ORGANIZATIONS_SQL: &str = include_str!("sql/demo_organizations.sql");
const ORGANIZATION_MEMBERS_SQL: &str = include_str!("sql/demo_organization_members.sql");
const EVENTS_SQL: &str = include_str!("sql/demo_events.sql");
const GRANTS_SQL: &str = include_str!("sql/demo_grants.sql");
const EVALUATION_RUN_SQL: &str = include_str!("sql/demo_evaluation_run.sql");
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
    let exists: db::Flag = diesel::sql_query(DATABASE_EXISTS_SQL)
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
/// The data set is deterministic in shape (the same plans, users, organizations and activity
/// levels every time), with ~30 days of events ending now; one transaction.
pub fn load_demo_data(conn: &mut PgConnection) -> Result<bool, DbError> {
    let users: db::Count = diesel::sql_query("SELECT count(*) AS n FROM users").get_result(conn)?;
    if users.n > 0 {
        return Ok(false);
    }
    conn.transaction(|conn| {
        diesel::sql_query("SELECT setseed(0.42)").execute(conn)?;
        // free..enterprise for users; team and business for organizations.
        diesel::sql_query(
            "INSERT INTO plans (name) VALUES ('free'), ('basic'), ('pro'), ('enterprise'), ('team'), ('business')",
        )
        .execute(conn)?;
        diesel::sql_query(PLAN_LIMITS_SQL).execute(conn)?;
        diesel::sql_query(PRICES_SQL).execute(conn)?;
        diesel::sql_query(USERS_SQL).execute(conn)?;
        diesel::sql_query(ORGANIZATIONS_SQL).execute(conn)?;
        diesel::sql_query(ORGANIZATION_MEMBERS_SQL).execute(conn)?;
        // User 2, an admin of Acme, is a member of Globex too.
        diesel::sql_query(
            "INSERT INTO organization_members (org_id, user_id, role) VALUES (2, 2, 'member')",
        )
        .execute(conn)?;
        diesel::sql_query(GRANTS_SQL).execute(conn)?;
        diesel::sql_query(EVENTS_SQL).execute(conn)?;
        diesel::sql_query(EVALUATION_RUN_SQL).execute(conn)?;
        Ok::<_, diesel::result::Error>(())
    })?;
    Ok(true)
}
