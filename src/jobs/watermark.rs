//! The aggregation watermark (`aggregation_watermark.xid`): every event whose `recorded_xid`
//! is below it has been aggregated. What `aggregate` and its rebuild read it with.

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;

use super::JobError;

#[derive(QueryableByName)]
struct XidText {
    #[diesel(sql_type = Text)]
    xid: String,
}

pub fn parse_xid(text: &str) -> Result<u64, JobError> {
    text.parse().map_err(|_| {
        JobError::Invalid(format!(
            "aggregate: transaction id `{text}` from the database is not a 64-bit number"
        ))
    })
}

/// Locks the watermark row (concurrent aggregators and rebuilds queue here) and reads it.
/// Refuses a watermark ahead of the cluster's transaction ids (see [`watermark_ahead`]).
pub fn lock_watermark(conn: &mut PgConnection) -> Result<u64, JobError> {
    let row: XidText =
        diesel::sql_query("SELECT xid::text AS xid FROM aggregation_watermark FOR UPDATE")
            .get_result(conn)
            .map_err(|e| match e {
                diesel::result::Error::NotFound => JobError::Invalid(
                    "aggregate: the aggregation_watermark row is missing; restore it with \
                     INSERT INTO aggregation_watermark DEFAULT VALUES only if token_usage_daily \
                     is empty, else with the highest xid it reflects"
                        .into(),
                ),
                e => e.into(),
            })?;
    let watermark = parse_xid(&row.xid)?;
    let current: XidText =
        diesel::sql_query("SELECT pg_current_xact_id()::text AS xid").get_result(conn)?;
    let current = parse_xid(&current.xid)?;
    if watermark > current {
        return Err(watermark_ahead(watermark, current));
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

/// X: every transaction below it has finished. A statement of its own, so its snapshot is
/// taken after the watermark lock was granted.
pub fn snapshot_xmin(conn: &mut PgConnection) -> Result<u64, JobError> {
    let row: XidText =
        diesel::sql_query("SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS xid")
            .get_result(conn)?;
    parse_xid(&row.xid)
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
