//! Connection pool, migrations and the database error classes the binary maps to exit codes.

pub mod schema;

use std::sync::Once;
use std::time::Duration;

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use secrecy::ExposeSecret;

use crate::config::Settings;
use crate::redact::redact_url;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// First half of every advisory lock key this program takes (`'UW'`), so its locks never
/// collide with an application's.
pub const ADVISORY_LOCK_CLASS: i32 = 0x5557;
/// Second half of the key held while migrations run.
pub const MIGRATION_LOCK_ID: i32 = 0;

/// A query result of one `bigint` column named `n` (`SELECT count(*) AS n …`).
#[derive(QueryableByName, Debug)]
pub struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub n: i64,
}

/// A query result of one boolean column named `value` (`SELECT EXISTS (…) AS value`).
#[derive(QueryableByName, Debug)]
pub struct Flag {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub value: bool,
}

pub type DbPool = Pool<ConnectionManager<PgConnection>>;
pub type DbConn = PooledConnection<ConnectionManager<PgConnection>>;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(
        "database unreachable at {target}: {message}; check database.url and that PostgreSQL is running"
    )]
    Unreachable { target: String, message: String },
    #[error("migrations failed: {0}")]
    Migration(String),
    #[error("database error: {0}")]
    Query(#[from] diesel::result::Error),
}

impl DbError {
    pub fn is_unreachable(&self) -> bool {
        matches!(self, DbError::Unreachable { .. })
    }
}

/// Where a connection goes, for messages: host and port, or the socket directory.
pub fn describe_target(url: &str) -> String {
    let redacted = redact_url(url);
    if let Some(host) = url
        .split(['?', '&'])
        .find_map(|part| part.strip_prefix("host="))
    {
        if host.starts_with('/') {
            return format!("socket {host}/.s.PGSQL.5432 ({redacted})");
        }
        return format!("host {host} ({redacted})");
    }
    redacted
}

/// The URL with the password from `database.password(_file)` or the credential added.
pub fn effective_url(settings: &Settings) -> Result<String, crate::config::ConfigError> {
    let url = settings.database.url.clone();
    let Some(password) = settings.database_password()? else {
        return Ok(url);
    };
    let encoded: String = password
        .expose_secret()
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let separator = if url.contains('?') { '&' } else { '?' };
    Ok(format!("{url}{separator}password={encoded}"))
}

/// How often a session running a statement checks that its client is still connected
/// (`client_connection_check_interval`, PostgreSQL 14+). Without it the session of a killed
/// worker runs its statement to the end and keeps holding the job's lock meanwhile.
pub const CLIENT_CHECK_INTERVAL: &str = "2s";

/// Applies this program's session settings to every new connection: pooled and direct.
fn prepare_session(conn: &mut PgConnection) {
    static WARNED: Once = Once::new();
    let set = format!("SET client_connection_check_interval = '{CLIENT_CHECK_INTERVAL}'");
    if let Err(e) = conn.batch_execute(&set) {
        // Older servers and some platforms lack it: runs still work, but the session of a
        // killed worker keeps the job's lock until its statement ends.
        WARNED.call_once(|| {
            tracing::warn!(
                error = %e,
                "the server refused client_connection_check_interval; after a worker is killed, \
                 its job stays locked until its last statement ends (PostgreSQL 14+ on Linux \
                 checks for vanished clients)"
            );
        });
    }
}

#[derive(Debug)]
struct SessionSettings;

impl CustomizeConnection<PgConnection, diesel::r2d2::Error> for SessionSettings {
    fn on_acquire(&self, conn: &mut PgConnection) -> Result<(), diesel::r2d2::Error> {
        prepare_session(conn);
        Ok(())
    }
}

/// A pool that connects lazily: building it never touches the network.
pub fn build_pool(url: &str, size: u32, connect_timeout: Duration) -> DbPool {
    let url = with_connect_timeout(url, connect_timeout);
    Pool::builder()
        .max_size(size)
        .min_idle(Some(0))
        .connection_timeout(connect_timeout.max(Duration::from_secs(1)))
        .test_on_check_out(true)
        .connection_customizer(Box::new(SessionSettings))
        .error_handler(Box::new(diesel::r2d2::LoggingErrorHandler))
        .build_unchecked(ConnectionManager::new(url))
}

fn with_connect_timeout(url: &str, timeout: Duration) -> String {
    if url.contains("connect_timeout=") || !url.contains("://") {
        return url.to_string();
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!(
        "{url}{separator}connect_timeout={}",
        timeout.as_secs().max(1)
    )
}

/// Opens one connection directly (not from a pool), classifying failure as unreachable.
pub fn connect(url: &str) -> Result<PgConnection, DbError> {
    let mut conn = PgConnection::establish(url).map_err(|e| DbError::Unreachable {
        target: describe_target(url),
        message: e.to_string().trim().to_string(),
    })?;
    prepare_session(&mut conn);
    Ok(conn)
}

/// Takes a connection from the pool; a failure means the database cannot be reached.
pub fn checkout(pool: &DbPool, url_for_messages: &str) -> Result<DbConn, DbError> {
    pool.get().map_err(|e| DbError::Unreachable {
        target: describe_target(url_for_messages),
        message: e.to_string(),
    })
}

/// Runs `work` in a transaction (a savepoint when one is already open) and always rolls it
/// back: a dry run does everything a real run would, so its report is true, and keeps nothing.
pub fn rolled_back<T, E>(
    conn: &mut PgConnection,
    work: impl FnOnce(&mut PgConnection) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<diesel::result::Error>,
{
    AnsiTransactionManager::begin_transaction(conn)?;
    let outcome = work(conn);
    let rollback = AnsiTransactionManager::rollback_transaction(conn);
    // The work's own error says more than a rollback failing after it.
    let value = outcome?;
    rollback?;
    Ok(value)
}

/// Applies pending migrations under an advisory lock, so two instances starting at once
/// never migrate concurrently. Returns the versions applied.
pub fn run_migrations(conn: &mut PgConnection) -> Result<Vec<String>, DbError> {
    diesel::sql_query("SELECT pg_advisory_lock($1, $2)")
        .bind::<diesel::sql_types::Integer, _>(ADVISORY_LOCK_CLASS)
        .bind::<diesel::sql_types::Integer, _>(MIGRATION_LOCK_ID)
        .execute(conn)?;
    let result = conn
        .run_pending_migrations(MIGRATIONS)
        .map(|versions| versions.iter().map(|v| v.to_string()).collect())
        .map_err(|e| DbError::Migration(e.to_string()));
    let unlock = conn.batch_execute(&format!(
        "SELECT pg_advisory_unlock({ADVISORY_LOCK_CLASS}, {MIGRATION_LOCK_ID})"
    ));
    let versions = result?;
    unlock?;
    Ok(versions)
}

/// Reverts every migration (tests of the down scripts).
pub fn revert_all_migrations(conn: &mut PgConnection) -> Result<(), DbError> {
    conn.revert_all_migrations(MIGRATIONS)
        .map(|_| ())
        .map_err(|e| DbError::Migration(e.to_string()))
}

/// Migrations embedded in this binary that the database has not applied yet.
pub fn pending_migrations(conn: &mut PgConnection) -> Result<Vec<String>, DbError> {
    conn.pending_migrations(MIGRATIONS)
        .map(|m| m.iter().map(|m| m.name().to_string()).collect())
        .map_err(|e| DbError::Migration(e.to_string()))
}
