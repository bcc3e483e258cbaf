//! The aggregation watermark (`aggregation_watermark`, one row): every event whose inserting
//! transaction id (`recorded_xid`) is below `xid` has been added into the summaries.

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Text, Timestamptz};

use super::JobError;

/// The watermark row.
#[derive(Debug, Clone, Copy)]
pub struct Watermark {
    pub xid: u64,
    /// When `xid` was last stored.
    pub updated_at: DateTime<Utc>,
}

#[derive(QueryableByName)]
struct WatermarkRow {
    #[diesel(sql_type = Text)]
    xid: String,
    #[diesel(sql_type = Timestamptz)]
    updated_at: DateTime<Utc>,
}

#[derive(QueryableByName)]
struct XidText {
    #[diesel(sql_type = Text)]
    xid: String,
}

/// Reads the watermark as of this statement's snapshot.
pub fn read(conn: &mut PgConnection) -> Result<Watermark, JobError> {
    select(
        conn,
        "SELECT xid::text AS xid, updated_at FROM aggregation_watermark",
    )
}

/// Locks the watermark row for the rest of the transaction (concurrent aggregators and
/// rebuilds queue here) and reads it. Refuses a watermark ahead of the cluster's transaction
/// ids (see [`watermark_ahead`]).
pub fn lock(conn: &mut PgConnection) -> Result<Watermark, JobError> {
    let watermark = select(
        conn,
        "SELECT xid::text AS xid, updated_at FROM aggregation_watermark FOR UPDATE",
    )?;
    let current: XidText =
        diesel::sql_query("SELECT pg_current_xact_id()::text AS xid").get_result(conn)?;
    let current = parse_xid(&current.xid)?;
    if watermark.xid > current {
        return Err(watermark_ahead(watermark.xid, current));
    }
    Ok(watermark)
}

/// Transaction ids only grow within a cluster, and the watermark is always one that was
/// already reached: one ahead means the data now lives in another cluster (a restore), whose
/// new events would get ids below it and never be counted.
fn watermark_ahead(watermark: u64, current: u64) -> JobError {
    JobError::Invalid(format!(
        "aggregate: the stored watermark (aggregation_watermark.xid = {watermark}) is ahead of \
         this cluster's current transaction id {current}: the database was restored into or moved \
         to another cluster, and events written now would never be counted. Stop the \
         applications' writes, then run SELECT usage_rebase_watermark(); see docs/OPERATIONS.md, \
         \"Restored or moved cluster\""
    ))
}

/// Reads the watermark row with `sql`, a `SELECT xid::text AS xid, updated_at` of it.
fn select(conn: &mut PgConnection, sql: &'static str) -> Result<Watermark, JobError> {
    let row: WatermarkRow = diesel::sql_query(sql)
        .get_result(conn)
        .map_err(|e| match e {
            diesel::result::Error::NotFound => JobError::Invalid(
                "the aggregation_watermark row is missing; restore it with \
                 INSERT INTO aggregation_watermark DEFAULT VALUES only if token_usage_daily \
                 is empty, else with the highest xid it reflects"
                    .into(),
            ),
            e => e.into(),
        })?;
    Ok(Watermark {
        xid: parse_xid(&row.xid)?,
        updated_at: row.updated_at,
    })
}

/// Moves the watermark to `xid`, in the caller's transaction (the one that added the events).
pub fn store(conn: &mut PgConnection, xid: u64) -> Result<(), JobError> {
    diesel::sql_query(
        "UPDATE aggregation_watermark SET xid = $1::xid8, updated_at = clock_timestamp()",
    )
    .bind::<Text, _>(xid.to_string())
    .execute(conn)?;
    Ok(())
}

/// X: every transaction below it has finished. A statement of its own, so its snapshot is
/// taken after the watermark lock was granted.
pub fn snapshot_xmin(conn: &mut PgConnection) -> Result<u64, JobError> {
    let row: XidText =
        diesel::sql_query("SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS xid")
            .get_result(conn)?;
    parse_xid(&row.xid)
}

pub fn parse_xid(text: &str) -> Result<u64, JobError> {
    text.parse().map_err(|_| {
        JobError::Invalid(format!(
            "transaction id `{text}` from the database is not a 64-bit number"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_ids_parse_as_64_bit_numbers() {
        assert_eq!(parse_xid("18446744073709551615").unwrap(), u64::MAX);
        assert!(parse_xid("12:34:").is_err());
    }
}
