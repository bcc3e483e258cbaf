//! `usage_settings`: the configuration the database's own functions read, written by the
//! worker whenever it prepares the database (start, `--run`, `--migrate`).

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::Integer;

use super::DbError;
use crate::config::IngestSettings;

const STORE_SETTINGS_SQL: &str = include_str!("sql/store_settings.sql");

/// Writes `ingest.idempotency_days` for `usage_record()`. Returns whether the stored value
/// changed; an unchanged value is not rewritten, so starting leaves the row alone.
pub fn store_settings(conn: &mut PgConnection, ingest: &IngestSettings) -> Result<bool, DbError> {
    let changed = diesel::sql_query(STORE_SETTINGS_SQL)
        .bind::<Integer, _>(i32::from(ingest.idempotency_days))
        .execute(conn)?;
    if changed > 0 {
        tracing::info!(
            idempotency_days = ingest.idempotency_days,
            "usage_settings updated from ingest.idempotency_days"
        );
    }
    Ok(changed > 0)
}
