//! `usage_settings`: the configuration the database's own functions read, written by the
//! worker whenever it prepares the database (start, `--run`, `--migrate`).

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::Integer;

use super::DbError;
use crate::config::IngestSettings;

/// Writes `ingest.idempotency_days` for `usage_record()`. Returns whether the stored value
/// changed; an unchanged value is not rewritten, so starting leaves the row alone.
pub fn store_settings(conn: &mut PgConnection, ingest: &IngestSettings) -> Result<bool, DbError> {
    let changed = diesel::sql_query(
        "INSERT INTO usage_settings (singleton, idempotency_days) VALUES (true, $1)
         ON CONFLICT (singleton) DO UPDATE
            SET idempotency_days = EXCLUDED.idempotency_days, updated_at = now()
          WHERE usage_settings.idempotency_days IS DISTINCT FROM EXCLUDED.idempotency_days",
    )
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
