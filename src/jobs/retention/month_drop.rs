//! Dropping a whole old month of usage events in two transactions, so that the exclusive lock
//! on `usage_events` lasts the same short time whatever the month's size:
//! 1. `usage_detach_partition` checks, under the parent's lock, that the month holds no event
//!    the aggregation has not counted, and detaches it: a catalog change, then commit;
//! 2. `usage_drop_detached_partition` drops the detached table, locking it alone: the commit
//!    that unlinks the month's files no longer keeps inserts waiting.
//!
//! Both run as the schema's owner (the daemon's role owns nothing). A run stopped between the
//! two leaves a detached table, which the next run drops first.

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz};

use chrono::{DateTime, Utc};

use crate::config::RetentionSettings;
use crate::db::Flag;
use crate::jobs::JobError;

const DETACHED_SQL: &str = include_str!("../sql/retention_detached.sql");

/// Detaches the month `name` (ending at or before `cutoff`) with a lock timeout, retried,
/// then drops it. Returns whether it went: not when an event the aggregation has not counted
/// arrived in it after the caller's probe.
pub(super) fn drop_month(
    conn: &mut PgConnection,
    name: &str,
    cutoff: DateTime<Utc>,
    settings: &RetentionSettings,
) -> Result<bool, JobError> {
    if !detach(conn, name, cutoff, settings)? {
        return Ok(false);
    }
    drop_detached(conn, name)?;
    Ok(true)
}

/// Drops the detached monthly tables an earlier run left; returns their names.
pub(super) fn drop_leftovers(conn: &mut PgConnection) -> Result<Vec<String>, JobError> {
    #[derive(QueryableByName)]
    struct Name {
        #[diesel(sql_type = Text)]
        name: String,
    }
    let names: Vec<Name> = diesel::sql_query(DETACHED_SQL).load(conn)?;
    let mut dropped = Vec::new();
    for Name { name } in names {
        drop_detached(conn, &name)?;
        tracing::info!(partition = %name, "detached month left by an earlier run dropped");
        dropped.push(name);
    }
    Ok(dropped)
}

/// The brief exclusive lock is taken with a lock timeout, so the job never queues inserts
/// behind a long transaction; a timeout is retried.
fn detach(
    conn: &mut PgConnection,
    name: &str,
    cutoff: DateTime<Utc>,
    settings: &RetentionSettings,
) -> Result<bool, JobError> {
    let lock_timeout_ms = settings.lock_timeout.0.as_millis();
    let mut last_error = None;
    for attempt in 1..=5 {
        let result = conn.transaction(|conn| {
            conn.batch_execute(&format!("SET LOCAL lock_timeout = '{lock_timeout_ms}ms'"))?;
            diesel::sql_query("SELECT usage_detach_partition($1, $2) AS value")
                .bind::<Text, _>(name)
                .bind::<Timestamptz, _>(cutoff)
                .get_result::<Flag>(conn)
        });
        match result {
            Ok(detached) => return Ok(detached.value),
            Err(e) => {
                tracing::warn!(partition = %name, attempt, error = %e, "could not detach partition yet; retrying");
                last_error = Some(e);
                std::thread::sleep(std::time::Duration::from_millis(200 * attempt));
            }
        }
    }
    Err(JobError::Invalid(format!(
        "could not detach partition {name} after 5 attempts ({}); a long transaction may hold \
         usage_events; the next run retries (retention.lock_timeout)",
        last_error.map(|e| e.to_string()).unwrap_or_default()
    )))
}

/// Drops the detached table `name` in a transaction of its own.
fn drop_detached(conn: &mut PgConnection, name: &str) -> Result<(), JobError> {
    #[derive(QueryableByName)]
    struct Moved {
        #[diesel(sql_type = Nullable<BigInt>)]
        moved: Option<i64>,
    }
    let moved: Moved = conn.transaction(|conn| {
        diesel::sql_query("SELECT usage_drop_detached_partition($1) AS moved")
            .bind::<Text, _>(name)
            .get_result(conn)
    })?;
    if let Some(n) = moved.moved.filter(|n| *n > 0) {
        tracing::warn!(partition = %name, rows = n, "events not yet aggregated written into the detached month were moved back into usage_events");
    }
    Ok(())
}
