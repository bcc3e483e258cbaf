//! Connection pool, migrations and the database error classes the binary maps to exit codes.
//!
//! Every object of the worker lives in one schema (`database.schema`); every connection the
//! worker opens uses it as `search_path`, so the jobs' SQL stays unqualified.

mod adopt;
pub mod clock;
mod pooler;
pub mod schema;
mod settings;

use std::sync::Once;
use std::time::Duration;

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use secrecy::ExposeSecret;

use crate::config::{ConfigError, SchemaName, Settings};
use crate::conninfo::ConnInfo;
use crate::redact::{redact_url, scrub_connection_secrets};

pub use pooler::refuse_transaction_pooler;
pub use settings::store_settings;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// First half of every advisory lock key this program takes (`'UW'`), so its locks never
/// collide with an application's.
pub const ADVISORY_LOCK_CLASS: i32 = 0x5557;
/// Second half of the key held while migrations run.
pub const MIGRATION_LOCK_ID: i32 = 0;

const SCHEMA_EXISTS_SQL: &str = include_str!("sql/schema_exists.sql");

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
    #[error(
        "database.url leads to a connection pooler in transaction mode ({evidence}); the daemon \
         keeps state in its session (each running job's advisory lock, its search_path, \
         prepared statements), which such a pooler hands to other clients between \
         transactions: connect directly to PostgreSQL or through the pooler's session mode \
         (PgBouncer: pool_mode = session; Supabase: the session pooler, port 5432). \
         Applications may keep the transaction-mode URL; see docs/OPERATIONS.md, Topologies"
    )]
    TransactionPooler { evidence: String },
    #[error("database error: {0}")]
    Query(#[from] diesel::result::Error),
}

impl DbError {
    pub fn is_unreachable(&self) -> bool {
        matches!(self, DbError::Unreachable { .. })
    }

    /// A setup the configuration must change; retrying cannot help.
    pub fn is_configuration(&self) -> bool {
        matches!(self, DbError::TransactionPooler { .. })
    }
}

/// Where a connection goes, for messages: host and port, or the socket, then the connection
/// string with its passwords masked.
pub fn describe_target(url: &str) -> String {
    let redacted = redact_url(url);
    match ConnInfo::parse(url).map(|info| info.target()) {
        Ok(target) if !target.is_empty() => format!("{target} ({redacted})"),
        _ => redacted,
    }
}

/// The connection string with the password from `database.password(_file)` or the credential
/// added in its own form: a quoted `password='…'` pair, or a percent-encoded URI parameter.
pub fn effective_url(settings: &Settings) -> Result<String, ConfigError> {
    let url = settings.database.url.clone();
    let Some(password) = settings.database_password()? else {
        return Ok(url);
    };
    let info =
        ConnInfo::parse(&url).map_err(|e| ConfigError::invalid("database.url", e.to_string()))?;
    Ok(info.with("password", password.expose_secret()))
}

/// Makes `schema` the only schema unqualified names resolve in (besides `pg_catalog` and
/// `pg_temp`), so no object of the application's `public` can stand in for one of ours.
pub fn use_schema(conn: &mut PgConnection, schema: &SchemaName) -> QueryResult<()> {
    // A SchemaName is a plain identifier: quoting it is enough.
    conn.batch_execute(&format!("SET search_path TO \"{schema}\""))
}

/// How often a session running a statement checks that its client is still connected
/// (`client_connection_check_interval`, PostgreSQL 14+). Without it the session of a killed
/// worker runs its statement to the end and keeps holding the job's lock meanwhile.
pub const CLIENT_CHECK_INTERVAL: &str = "2s";

/// The settings that make the server end a session of this program within a minute of its
/// client's silence, so that a daemon cut off from the network (or frozen) never holds a
/// job's lock, or the aggregation watermark, for long: TCP keepalives probe an idle
/// connection after 10 s, every 5 s, 3 times (25 s); `tcp_user_timeout` drops one whose sent
/// data stays unacknowledged for 30 s; a transaction left idle ends after 45 s (the daemon's
/// transactions never wait on the network: alerts are claimed with a lease and delivered
/// outside them).
pub const SESSION_SETTINGS: &[(&str, &str)] = &[
    ("client_connection_check_interval", CLIENT_CHECK_INTERVAL),
    ("tcp_keepalives_idle", "10"),
    ("tcp_keepalives_interval", "5"),
    ("tcp_keepalives_count", "3"),
    ("tcp_user_timeout", "30000"),
    ("idle_in_transaction_session_timeout", "45s"),
];

/// The same on the client's side, added to the connection string unless it sets them: a
/// run whose database vanishes mid-statement fails within about 30 s instead of waiting for
/// the operating system's two hours.
const CLIENT_KEEPALIVES: &[(&str, &str)] = &[
    ("keepalives", "1"),
    ("keepalives_idle", "10"),
    ("keepalives_interval", "5"),
    ("keepalives_count", "3"),
    ("tcp_user_timeout", "30000"),
];

/// Applies this program's session settings to every new connection: pooled and direct.
fn prepare_session(conn: &mut PgConnection) {
    static WARNED: Once = Once::new();
    for (name, value) in SESSION_SETTINGS {
        if let Err(e) = conn.batch_execute(&format!("SET {name} = '{value}'")) {
            // Older servers and some platforms lack one: runs still work, but a session
            // whose client vanished may hold the job's lock longer.
            WARNED.call_once(|| {
                tracing::warn!(
                    setting = name,
                    error = %e,
                    "the server refused a session setting; after a worker is killed or cut \
                     off, its job may stay locked until the server notices (PostgreSQL 14+ on \
                     Linux supports them all)"
                );
            });
        }
    }
}

/// The session settings and the worker's schema on every connection the pool opens.
#[derive(Debug)]
struct SessionSettings(SchemaName);

impl CustomizeConnection<PgConnection, diesel::r2d2::Error> for SessionSettings {
    fn on_acquire(&self, conn: &mut PgConnection) -> Result<(), diesel::r2d2::Error> {
        prepare_session(conn);
        use_schema(conn, &self.0).map_err(diesel::r2d2::Error::QueryError)
    }
}

/// A pool that connects lazily: building it never touches the network. Its connections use
/// `schema` as `search_path`.
pub fn build_pool(url: &str, size: u32, connect_timeout: Duration, schema: &SchemaName) -> DbPool {
    let url = with_client_defaults(url, connect_timeout);
    Pool::builder()
        .max_size(size)
        .min_idle(Some(0))
        .connection_timeout(connect_timeout.max(Duration::from_secs(1)))
        .test_on_check_out(true)
        .connection_customizer(Box::new(SessionSettings(schema.clone())))
        .error_handler(Box::new(diesel::r2d2::LoggingErrorHandler))
        .build_unchecked(ConnectionManager::new(url))
}

/// Adds libpq's `connect_timeout` and [`CLIENT_KEEPALIVES`], each unless the connection
/// string sets it; a string libpq would refuse anyway is left for libpq to name.
pub fn with_client_defaults(url: &str, connect_timeout: Duration) -> String {
    let Ok(mut info) = ConnInfo::parse(url) else {
        return url.to_string();
    };
    let timeout = connect_timeout.as_secs().max(1).to_string();
    let defaults = std::iter::once(("connect_timeout", timeout.as_str()))
        .chain(CLIENT_KEEPALIVES.iter().copied());
    let mut out = url.to_string();
    for (name, value) in defaults {
        if !info.has(name) {
            out = info.with(name, value);
            info = match ConnInfo::parse(&out) {
                Ok(info) => info,
                Err(_) => return url.to_string(),
            };
        }
    }
    out
}

/// A connection failure as an error naming where it went and no secret: libpq's message may
/// quote parts of the connection string.
fn unreachable(url: &str, message: &str) -> DbError {
    DbError::Unreachable {
        target: describe_target(url),
        message: scrub_connection_secrets(message.trim(), url),
    }
}

/// How long [`connect`] waits for a server to answer.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens one connection directly (not from a pool), classifying failure as unreachable.
pub fn connect(url: &str) -> Result<PgConnection, DbError> {
    connect_within(url, DEFAULT_CONNECT_TIMEOUT)
}

/// As [`connect`], waiting up to `connect_timeout` (unless the connection string sets one).
pub fn connect_within(url: &str, connect_timeout: Duration) -> Result<PgConnection, DbError> {
    let mut conn = PgConnection::establish(&with_client_defaults(url, connect_timeout))
        .map_err(|e| unreachable(url, &e.to_string()))?;
    prepare_session(&mut conn);
    Ok(conn)
}

/// Opens one connection directly, using `schema` as `search_path` (the worker's sessions).
pub fn connect_in(url: &str, schema: &SchemaName) -> Result<PgConnection, DbError> {
    let mut conn = connect(url)?;
    use_schema(&mut conn, schema)?;
    Ok(conn)
}

/// Takes a connection from the pool; a failure means the database cannot be reached.
pub fn checkout(pool: &DbPool, url_for_messages: &str) -> Result<DbConn, DbError> {
    pool.get()
        .map_err(|e| unreachable(url_for_messages, &e.to_string()))
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

/// Applies pending migrations in `schema` under an advisory lock, so two instances starting
/// at once never migrate concurrently: creates the schema when it is missing, moves the
/// objects of a release that kept them in `public` into it, then runs diesel's migrations
/// with `search_path` = the schema alone. Returns the versions applied.
pub fn run_migrations(
    conn: &mut PgConnection,
    schema: &SchemaName,
) -> Result<Vec<String>, DbError> {
    diesel::sql_query("SELECT pg_advisory_lock($1, $2)")
        .bind::<diesel::sql_types::Integer, _>(ADVISORY_LOCK_CLASS)
        .bind::<diesel::sql_types::Integer, _>(MIGRATION_LOCK_ID)
        .execute(conn)?;
    let result = migrate_locked(conn, schema);
    let unlock = diesel::sql_query("SELECT pg_advisory_unlock($1, $2)")
        .bind::<diesel::sql_types::Integer, _>(ADVISORY_LOCK_CLASS)
        .bind::<diesel::sql_types::Integer, _>(MIGRATION_LOCK_ID)
        .execute(conn);
    let versions = result?;
    unlock?;
    Ok(versions)
}

fn migrate_locked(conn: &mut PgConnection, schema: &SchemaName) -> Result<Vec<String>, DbError> {
    require_server_version(conn)?;
    create_schema(conn, schema)?;
    use_schema(conn, schema)?;
    adopt::adopt_public_layout(conn, schema, &embedded_versions()?)?;
    use_migration_path(conn, schema)?;
    let applied = conn
        .run_pending_migrations(MIGRATIONS)
        .map(|versions| versions.iter().map(|v| v.to_string()).collect())
        .map_err(|e| {
            DbError::Migration(format!(
                "{e} (in schema {schema}; run --migrate as the role that owns it, see deploy/roles.sql)"
            ))
        });
    use_schema(conn, schema)?;
    applied
}

/// The oldest PostgreSQL the schema works on: `client_connection_check_interval` and the
/// `xid8` functions the aggregation's watermark relies on (PostgreSQL 13, 14).
const MIN_SERVER_VERSION_NUM: i32 = 140_000;

/// Refuses an older server before any migration runs, instead of failing halfway with a
/// syntax error.
fn require_server_version(conn: &mut PgConnection) -> Result<(), DbError> {
    #[derive(QueryableByName)]
    struct Version {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        num: i32,
        #[diesel(sql_type = diesel::sql_types::Text)]
        text: String,
    }
    let version: Version = diesel::sql_query(
        "SELECT current_setting('server_version_num')::int AS num, \
                current_setting('server_version') AS text",
    )
    .get_result(conn)?;
    if version.num < MIN_SERVER_VERSION_NUM {
        return Err(DbError::Migration(format!(
            "PostgreSQL {} is too old: the schema needs PostgreSQL 14 or later; upgrade the \
             server (pg_upgrade) and run --migrate again",
            version.text
        )));
    }
    Ok(())
}

/// `CREATE SCHEMA` only when the schema is missing: that needs `CREATE` on the database,
/// which the owner of a schema made by deploy/roles.sql does not have (nor need).
fn create_schema(conn: &mut PgConnection, schema: &SchemaName) -> Result<(), DbError> {
    let exists: Flag = diesel::sql_query(SCHEMA_EXISTS_SQL)
        .bind::<diesel::sql_types::Text, _>(schema.as_str())
        .get_result(conn)?;
    if exists.value {
        return Ok(());
    }
    conn.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
        .map_err(|e| {
            DbError::Migration(format!(
                "cannot create schema {schema} (database.schema): {e}; create it as a superuser \
                 with deploy/roles.sql, or grant CREATE on the database to this role"
            ))
        })
}

/// The versions of the migrations embedded in this binary (`20261123000001`, …).
fn embedded_versions() -> Result<Vec<String>, DbError> {
    let migrations = MigrationSource::<Pg>::migrations(&MIGRATIONS)
        .map_err(|e| DbError::Migration(e.to_string()))?;
    Ok(migrations
        .iter()
        .map(|m| m.name().version().to_string())
        .collect())
}

/// The `search_path` migrations run with: the schema, then pg_temp. Functions written with
/// `SET search_path FROM CURRENT` (sql/functions) keep it, so that no object of a caller's
/// path, nor a temporary table, can stand in for one of ours.
pub fn use_migration_path(conn: &mut PgConnection, schema: &SchemaName) -> QueryResult<()> {
    conn.batch_execute(&format!("SET search_path TO \"{schema}\", pg_temp"))
}

/// Reverts every migration of `schema` (tests of the down scripts).
pub fn revert_all_migrations(conn: &mut PgConnection, schema: &SchemaName) -> Result<(), DbError> {
    use_migration_path(conn, schema)?;
    conn.revert_all_migrations(MIGRATIONS)
        .map(|_| ())
        .map_err(|e| DbError::Migration(e.to_string()))
}

#[derive(QueryableByName)]
struct AppliedVersion {
    #[diesel(sql_type = diesel::sql_types::Text)]
    version: String,
}

/// Migrations embedded in this binary that the connection's schema has not applied yet.
/// Read without diesel's harness, which would try to create its table: the daemon's role may
/// create nothing.
pub fn pending_migrations(conn: &mut PgConnection) -> Result<Vec<String>, DbError> {
    let table: Flag =
        diesel::sql_query("SELECT to_regclass('__diesel_schema_migrations') IS NOT NULL AS value")
            .get_result(conn)?;
    let applied: Vec<String> = if table.value {
        diesel::sql_query("SELECT version::text AS version FROM __diesel_schema_migrations")
            .load::<AppliedVersion>(conn)?
            .into_iter()
            .map(|v| v.version)
            .collect()
    } else {
        Vec::new()
    };
    let migrations = MigrationSource::<Pg>::migrations(&MIGRATIONS)
        .map_err(|e| DbError::Migration(e.to_string()))?;
    Ok(migrations
        .iter()
        .filter(|m| !applied.contains(&m.name().version().to_string()))
        .map(|m| m.name().to_string())
        .collect())
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

    fn with_password(url: &str, password: &str) -> String {
        let mut settings = Settings::default();
        settings.database.url = url.to_string();
        settings.database.password = Some(SecretString::from(password.to_string()));
        effective_url(&settings).unwrap()
    }

    #[test]
    fn the_configured_password_is_added_in_the_form_of_the_connection_string() {
        assert_eq!(
            with_password("host=127.0.0.1 port=1 dbname=x", "it's 0123"),
            r"host=127.0.0.1 port=1 dbname=x password='it\'s 0123'"
        );
        assert_eq!(
            with_password("postgres://worker@db/usage", "it's 0123"),
            "postgres://worker@db/usage?password=it%27s%200123"
        );
    }

    #[test]
    fn the_connect_timeout_and_keepalives_are_added_to_both_forms_unless_given() {
        let timeout = Duration::from_secs(3);
        let keepalives = "keepalives=1 keepalives_idle=10 keepalives_interval=5 \
                          keepalives_count=3 tcp_user_timeout=30000";
        assert_eq!(
            with_client_defaults("host=/tmp dbname=x", timeout),
            format!("host=/tmp dbname=x connect_timeout=3 {keepalives}")
        );
        assert_eq!(
            with_client_defaults("postgres://w@db/x?sslmode=require", timeout),
            format!(
                "postgres://w@db/x?sslmode=require&connect_timeout=3&{}",
                keepalives.replace(' ', "&")
            )
        );
        assert_eq!(
            with_client_defaults(
                "host=/tmp connect_timeout=9 keepalives_idle=60 tcp_user_timeout=0",
                timeout
            ),
            "host=/tmp connect_timeout=9 keepalives_idle=60 tcp_user_timeout=0 keepalives=1 \
             keepalives_interval=5 keepalives_count=3"
        );
    }

    #[test]
    fn an_unreachable_target_names_the_host_and_port_but_no_password() {
        let url = "host=127.0.0.1 port=1 password=hunter2secret dbname=x";
        let error = unreachable(url, "failed for password hunter2secret\n");
        let text = error.to_string();
        assert!(text.contains("host 127.0.0.1 port 1"), "{text}");
        assert!(!text.contains("hunter2secret"), "{text}");
    }
}
