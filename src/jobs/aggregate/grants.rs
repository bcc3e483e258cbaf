//! Credit grants in the books: what each grant gave is recorded (`usage_grant_draws`) by
//! the aggregate job, from the counted events, in transactions that hold the watermark.
//! The batch moves the marks that cut periods at a grant's start, expiry or void and flags
//! its subjects' grants; `settle` then records their drawdown again (`usage_grant_settle()`,
//! one set-based SQL function over the flagged subjects, over `usage_grant_ledger`). New
//! and voided grants are flagged when they are written, so a run with no new event settles
//! them too. Everything is recomputed from the books, never added to, so a crash or a second
//! run changes nothing.

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::BigInt;

use crate::jobs::JobError;

const MARKS_SQL: &str = include_str!("../sql/aggregate_grant_marks.sql");
const UNSETTLE_SQL: &str = include_str!("../sql/aggregate_grant_unsettle.sql");
const SETTLE_SQL: &str = include_str!("../sql/grants_settle.sql");

/// What one `settle` did.
#[derive(QueryableByName, Debug, Default, Clone, Copy)]
pub struct Settled {
    /// Subjects whose drawdown was recorded again.
    #[diesel(sql_type = BigInt)]
    pub subjects: i64,
    /// Rows of `usage_grant_draws` inserted, changed or deleted.
    #[diesel(sql_type = BigInt)]
    pub changed: i64,
}

/// In the aggregate transaction, after the batch is in the periods: the batch into the
/// marks, and its subjects' grants flagged for `settle`.
pub fn add_batch(conn: &mut PgConnection) -> Result<(), JobError> {
    diesel::sql_query(MARKS_SQL).execute(conn)?;
    diesel::sql_query(UNSETTLE_SQL).execute(conn)?;
    Ok(())
}

/// Records the drawdown of every subject with a flagged grant. Inside a transaction that
/// holds the watermark row (the aggregate transaction, a rebuild's, a reset's), after the
/// books have moved.
pub fn settle(conn: &mut PgConnection) -> Result<Settled, JobError> {
    Ok(diesel::sql_query(SETTLE_SQL).get_result(conn)?)
}
