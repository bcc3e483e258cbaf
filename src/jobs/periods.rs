//! Quota periods: what `reset-daily` and `reset-monthly` share. Closing ended periods at
//! rollover (reconciled against the raw events), opening their successors, and manual resets
//! of one user or organization. Period bounds come from the SQL function
//! `usage_period_bounds`, the single implementation of "when does a day or month start".
//!
//! A period belongs to a [`Subject`]: a user's personal usage, keyed (user_id, org_id 0), or
//! an organization's shared quota, keyed (0, org_id). User id 0 is a legal application user,
//! so every statement keys periods by both columns.

mod manual;
mod tally;

use chrono::{DateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text, Timestamptz};

use super::{Ctx, JobError, JobReport, RunOpts};
use crate::subject::Subject;
use tally::{CloseTally, ClosedBatch, Drift, UnknownZone};

/// Periods closed per transaction (aggregate waits for each one, a few seconds at most); a
/// batch's successors that have already ended (after downtime) are closed by a later batch
/// of the same run.
const CLOSE_BATCH_SIZE: i64 = 50_000;

const DUE_SQL: &str = include_str!("sql/reset_due.sql");
const RAW_SQL: &str = include_str!("sql/reset_raw.sql");
const LIMITS_SQL: &str = include_str!("sql/reset_limits.sql");
const RECORDED_SQL: &str = include_str!("sql/reset_recorded.sql");
const DRIFT_SQL: &str = include_str!("sql/reset_drift.sql");
const APPLY_SQL: &str = include_str!("sql/reset_apply.sql");
const CLOSE_SQL: &str = include_str!("sql/reset_close.sql");
const SUCCESSORS_SQL: &str = include_str!("sql/reset_successors.sql");
const UNKNOWN_ZONES_SQL: &str = include_str!("sql/reset_unknown_zones.sql");
const GRANT_UNSETTLE_SQL: &str = include_str!("sql/reset_grant_unsettle.sql");

/// The kind of quota period a reset job closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaPeriod {
    Day,
    Month,
}

impl QuotaPeriod {
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaPeriod::Day => "day",
            QuotaPeriod::Month => "month",
        }
    }
}

/// The job body of `reset-daily` / `reset-monthly`: a manual reset of `opts.user_id` or
/// `opts.org_id` when given, else the rollover of every ended period.
pub fn run_reset(
    _ctx: &Ctx,
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    opts: &RunOpts,
    period: QuotaPeriod,
) -> Result<JobReport, JobError> {
    if opts.dry_run {
        return crate::db::rolled_back(conn, |conn| reset_once(conn, now, opts, period));
    }
    reset_once(conn, now, opts, period)
}

fn reset_once(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    opts: &RunOpts,
    period: QuotaPeriod,
) -> Result<JobReport, JobError> {
    let subject = match (opts.user_id, opts.org_id) {
        (Some(_), Some(_)) => {
            return Err(JobError::Invalid(
                "a manual reset takes --user or --org, not both".to_string(),
            ));
        }
        (Some(user_id), None) => Some(Subject::User(user_id)),
        (None, Some(org_id)) => Some(Subject::Org(org_id)),
        (None, None) => None,
    };
    match subject {
        Some(subject) => manual::reset_period(conn, now, subject, period, opts.dry_run),
        None => close_ended_periods(conn, now, period, opts),
    }
}

/// Holds the aggregation watermark row (shared) for the rest of the transaction. Every
/// aggregate transaction locks that row for update before it adds anything, so it waits for
/// this one and this one waits for it: reconciliation never interleaves with incremental
/// aggregation. Every event below the watermark is in the reconciled totals; every event
/// above it is added later by aggregate, into whichever period contains it.
fn lock_out_aggregation(conn: &mut PgConnection) -> QueryResult<()> {
    diesel::sql_query("SELECT xid::text FROM aggregation_watermark FOR SHARE").execute(conn)?;
    // JIT compiling these short set-based statements costs more than running them; with the
    // default 4 MB a batch's sums and joins spill to disk (64 MB, as aggregate uses). The
    // temporary tables of a previous batch are dropped (they survive when an outer
    // transaction, such as a dry run, is still open).
    conn.batch_execute("SET LOCAL jit = off")?;
    conn.batch_execute("SET LOCAL work_mem = '64MB'")?;
    conn.batch_execute(
        "DROP TABLE IF EXISTS usage_closing, usage_closing_raw, usage_closing_recorded",
    )
}

/// Runs `f`, whose statements join a batch in `usage_closing` to the events or the period
/// tables, with hash and merge joins off: each period of the batch then reaches its own rows
/// through an index, and a batch costs what its periods hold. Left to itself the planner
/// hashes the batch and scans the whole month's partition or period table, or walks a whole
/// primary key for a merge, once per batch: at a million periods, twenty batches read the
/// tables twenty times. Only for statements whose every join has an index to probe (or a
/// side of a row or two).
pub(super) fn by_key<T>(
    conn: &mut PgConnection,
    f: impl FnOnce(&mut PgConnection) -> QueryResult<T>,
) -> QueryResult<T> {
    conn.batch_execute("SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off")?;
    let out = f(conn)?;
    conn.batch_execute(
        "SET LOCAL enable_hashjoin TO DEFAULT; SET LOCAL enable_mergejoin TO DEFAULT",
    )?;
    Ok(out)
}

/// Reconciliation, steps 1b and 2: the limits each period of `usage_closing` keeps, and the
/// true totals from the raw events into `usage_closing_raw`.
pub(super) fn snapshot_and_count(conn: &mut PgConnection) -> QueryResult<()> {
    diesel::sql_query(LIMITS_SQL).execute(conn)?;
    by_key(conn, |conn| diesel::sql_query(RAW_SQL).execute(conn))?;
    conn.batch_execute("ANALYZE usage_closing_raw")
}

/// Reconciliation, step 4: writes the true totals of `usage_closing_raw` into the periods and
/// closes those with a close_reason, by key: the index lets each period find its rows in
/// `usage_closing_raw`.
pub(super) fn apply(conn: &mut PgConnection, now: DateTime<Utc>) -> QueryResult<usize> {
    conn.batch_execute(
        "CREATE INDEX ON usage_closing_raw (user_id, org_id, period, period_start, kind)",
    )?;
    by_key(conn, |conn| {
        diesel::sql_query(APPLY_SQL)
            .bind::<Timestamptz, _>(now)
            .execute(conn)
    })
}

/// Closes every open period of kind `period` with `period_end <= now`, users' and
/// organizations' alike, reconciled against the raw events, and opens the successor of each
/// one whose subject was active in it. Repeats until none has ended, so after downtime every
/// missed boundary is closed in order.
fn close_ended_periods(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    period: QuotaPeriod,
    opts: &RunOpts,
) -> Result<JobReport, JobError> {
    let mut tally = CloseTally::default();
    loop {
        opts.cancel.check()?;
        let Some(batch) = conn.transaction(|conn| close_batch(conn, now, period))? else {
            break;
        };
        tally.add(batch, period);
    }
    Ok(tally.into_report(now, period, opts.dry_run))
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Closes up to [`CLOSE_BATCH_SIZE`] ended periods and opens their successors, in the caller's
/// transaction. `None` when no period has ended.
fn close_batch(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    period: QuotaPeriod,
) -> QueryResult<Option<ClosedBatch>> {
    lock_out_aggregation(conn)?;
    let closed = diesel::sql_query(DUE_SQL)
        .bind::<Text, _>(period.as_str())
        .bind::<Timestamptz, _>(now)
        .bind::<BigInt, _>(CLOSE_BATCH_SIZE)
        .execute(conn)?;
    if closed == 0 {
        return Ok(None);
    }
    conn.batch_execute("ANALYZE usage_closing")?;
    let org_periods: Count =
        diesel::sql_query("SELECT count(*) AS n FROM usage_closing WHERE org_id > 0")
            .get_result(conn)?;
    let unknown_zones: Vec<UnknownZone> = diesel::sql_query(UNKNOWN_ZONES_SQL).load(conn)?;
    snapshot_and_count(conn)?;
    by_key(conn, |conn| diesel::sql_query(RECORDED_SQL).execute(conn))?;
    let drift: Vec<Drift> = diesel::sql_query(DRIFT_SQL).load(conn)?;
    // Without drift the recorded totals are already the raw ones: only the status changes.
    if drift.is_empty() {
        by_key(conn, |conn| {
            diesel::sql_query(CLOSE_SQL)
                .bind::<Timestamptz, _>(now)
                .execute(conn)
        })?;
    } else {
        apply(conn, now)?;
    }
    let opened = diesel::sql_query(SUCCESSORS_SQL).execute(conn)?;
    diesel::sql_query(GRANT_UNSETTLE_SQL).execute(conn)?;
    conn.batch_execute("DROP TABLE usage_closing, usage_closing_raw, usage_closing_recorded")?;
    Ok(Some(ClosedBatch {
        closed,
        org_periods: usize::try_from(org_periods.n).unwrap_or(0),
        opened,
        drift,
        unknown_zones,
    }))
}
