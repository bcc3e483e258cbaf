//! Events `aggregate` cannot count: set aside into `usage_quarantine`, in the transaction that
//! advances the watermark past them, so one hostile row never stops anyone's counting.
//!
//! An event is set aside when its values can never be counted (`usage_event_problem`: a
//! `created_at` outside the bounds, a NaN cost; rows from before those bounds) or when adding
//! it would take a `token_usage_daily` sum or a `usage_periods` total past 2^63-1. The checks
//! are set-based over the batch; the overflow ones cost one key probe per summary row and
//! per subject of the batch (a user's personal usage, or an organization's: period totals of
//! an organization add up all its members), and the window queries that pick the culprits run
//! only when a sum would overflow.

use std::collections::{BTreeMap, BTreeSet};

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use serde_json::json;

use super::JobError;

const SET_ASIDE_SQL: &str = include_str!("sql/aggregate_set_aside.sql");
const LEAVE_SQL: &str = include_str!("sql/aggregate_set_aside_leave.sql");
const QUARANTINE_SQL: &str = include_str!("sql/aggregate_quarantine.sql");
const GROUPS_SQL: &str = include_str!("sql/aggregate_groups.sql");
const DAILY_EXISTING_SQL: &str = include_str!("sql/aggregate_daily_existing.sql");
const OVERFLOW_DAILY_SQL: &str = include_str!("sql/aggregate_overflow_daily.sql");
const OVERFLOW_DAILY_SET_ASIDE_SQL: &str =
    include_str!("sql/aggregate_overflow_daily_set_aside.sql");
const OVERFLOW_PERIOD_SQL: &str = include_str!("sql/aggregate_overflow_period.sql");
const OVERFLOW_PERIOD_SET_ASIDE_SQL: &str =
    include_str!("sql/aggregate_overflow_period_set_aside.sql");

/// How many event and user ids a report and a log line list (the counts are complete).
const LIST_LIMIT: usize = 100;

/// One event set aside by this transaction.
#[derive(QueryableByName, Debug)]
pub struct SetAside {
    #[diesel(sql_type = BigInt)]
    pub event_id: i64,
    #[diesel(sql_type = BigInt)]
    pub user_id: i64,
    /// The organization the usage was spent in; None for personal usage.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub org_id: Option<i64>,
    #[diesel(sql_type = Text)]
    pub reason: String,
}

/// Removes from `aggregate_batch` every event that cannot be counted, records it in
/// `usage_quarantine` and returns it. Needs `aggregate_subjects`; leaves `aggregate_groups`
/// (the batch grouped as `token_usage_daily` is keyed) and `aggregate_daily_existing` (the
/// summary rows those groups add to) for `aggregate_daily.sql`.
pub fn set_aside_uncountable(conn: &mut PgConnection) -> Result<Vec<SetAside>, JobError> {
    conn.batch_execute(
        "DROP TABLE IF EXISTS pg_temp.aggregate_set_aside, pg_temp.aggregate_groups,
                              pg_temp.aggregate_daily_existing, pg_temp.aggregate_overflow_daily,
                              pg_temp.aggregate_overflow_period",
    )?;
    diesel::sql_query(SET_ASIDE_SQL).execute(conn)?;
    diesel::sql_query(LEAVE_SQL).execute(conn)?;
    group_batch(conn)?;
    if diesel::sql_query(OVERFLOW_DAILY_SQL).execute(conn)? > 0 {
        diesel::sql_query(OVERFLOW_DAILY_SET_ASIDE_SQL).execute(conn)?;
        regroup(conn)?;
    }
    if diesel::sql_query(OVERFLOW_PERIOD_SQL).execute(conn)? > 0 {
        diesel::sql_query(OVERFLOW_PERIOD_SET_ASIDE_SQL).execute(conn)?;
        regroup(conn)?;
    }
    diesel::sql_query(QUARANTINE_SQL).execute(conn)?;
    Ok(diesel::sql_query(
        "SELECT event_id, user_id, org_id, reason FROM aggregate_set_aside ORDER BY event_id",
    )
    .load(conn)?)
}

/// Groups the batch into `aggregate_groups` and lists the summary rows the groups add to
/// (`aggregate_daily_existing`), with statistics for the statements that read them.
fn group_batch(conn: &mut PgConnection) -> Result<(), JobError> {
    diesel::sql_query(GROUPS_SQL).execute(conn)?;
    conn.batch_execute("ANALYZE aggregate_groups")?;
    conn.batch_execute("DROP TABLE IF EXISTS pg_temp.aggregate_daily_existing")?;
    diesel::sql_query(DAILY_EXISTING_SQL).execute(conn)?;
    conn.batch_execute("ANALYZE aggregate_daily_existing")?;
    Ok(())
}

/// Takes the events set aside so far out of the batch and groups what is left again.
fn regroup(conn: &mut PgConnection) -> Result<(), JobError> {
    diesel::sql_query(LEAVE_SQL).execute(conn)?;
    conn.batch_execute("DROP TABLE aggregate_groups")?;
    group_batch(conn)?;
    Ok(())
}

/// What one run set aside, over all its transactions.
#[derive(Default)]
pub struct Tally {
    count: u64,
    reasons: BTreeMap<String, u64>,
    event_ids: Vec<i64>,
    user_ids: BTreeSet<i64>,
    org_ids: BTreeSet<i64>,
}

impl Tally {
    /// Counts one transaction's events and logs them (ids only: no personal data).
    pub fn add(&mut self, job: &'static str, set_aside: Vec<SetAside>) {
        if set_aside.is_empty() {
            return;
        }
        let mut reasons = BTreeMap::new();
        for event in &set_aside {
            *reasons.entry(event.reason.clone()).or_insert(0u64) += 1;
        }
        tracing::warn!(
            job.name = job,
            events.count = set_aside.len(),
            events.reasons = ?reasons,
            events.ids = ?set_aside.iter().take(LIST_LIMIT).map(|e| e.event_id).collect::<Vec<_>>(),
            users.ids = ?set_aside.iter().map(|e| e.user_id).collect::<BTreeSet<_>>().into_iter().take(LIST_LIMIT).collect::<Vec<_>>(),
            orgs.ids = ?set_aside.iter().filter_map(|e| e.org_id).collect::<BTreeSet<_>>().into_iter().take(LIST_LIMIT).collect::<Vec<_>>(),
            "events that cannot be counted were set aside into usage_quarantine; everyone else's \
             usage is counted (see docs/OPERATIONS.md, \"Quarantined events\")"
        );
        self.count += set_aside.len() as u64;
        for (reason, n) in reasons {
            *self.reasons.entry(reason).or_insert(0) += n;
        }
        for event in set_aside {
            if self.event_ids.len() < LIST_LIMIT {
                self.event_ids.push(event.event_id);
            }
            self.user_ids.insert(event.user_id);
            self.org_ids.extend(event.org_id);
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The run report's `quarantined` entry.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "events": self.count,
            "reasons": self.reasons,
            "event_ids": self.event_ids,
            "user_ids": self.user_ids.iter().take(LIST_LIMIT).collect::<Vec<_>>(),
            "org_ids": self.org_ids.iter().take(LIST_LIMIT).collect::<Vec<_>>(),
        })
    }
}

#[derive(QueryableByName)]
struct ReasonCount {
    #[diesel(sql_type = Text)]
    reason: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Events in `usage_quarantine` by reason; `None` when the table does not exist yet (a
/// database not migrated this far).
pub fn counts_by_reason(conn: &mut PgConnection) -> QueryResult<Option<Vec<(String, i64)>>> {
    let exists = diesel::sql_query("SELECT to_regclass('usage_quarantine') IS NOT NULL AS value")
        .get_result::<crate::db::Flag>(conn)?
        .value;
    if !exists {
        return Ok(None);
    }
    let rows: Vec<ReasonCount> = diesel::sql_query(
        "SELECT reason, count(*) AS n FROM usage_quarantine GROUP BY reason ORDER BY reason",
    )
    .load(conn)?;
    Ok(Some(rows.into_iter().map(|r| (r.reason, r.n)).collect()))
}
