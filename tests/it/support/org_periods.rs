//! Organizations in the quota period tests: setting them up, their events, and reading their
//! periods (user_id 0, org_id N) back next to the raw events they must equal.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

use super::TestDb;
use super::quota::PeriodRow;

/// One `ai_response` event of `tokens` spent by `user` in organization `org` (None: personal).
pub fn event_in(db: &TestDb, user: i64, org: Option<i64>, tokens: i64, created_at: &str) {
    let org = org.map_or("NULL".to_string(), |o| o.to_string());
    db.execute(&format!(
        "INSERT INTO usage_events (user_id, org_id, kind, tokens, cost, created_at)
         VALUES ({user}, {org}, 'ai_response', {tokens}, {tokens} * 0.001, '{created_at}')"
    ));
}

/// Opens the organization's natural `period` containing `instant` with zero totals, unless
/// it has one there already (`aggregate` opens it for the organization's first event).
pub fn open_org_period(db: &TestDb, org: i64, period: &str, instant: &str) {
    db.execute(&format!(
        "INSERT INTO usage_periods (user_id, org_id, period, period_start, period_end)
         SELECT 0, o.id, '{period}', b.period_start, b.period_end
           FROM organizations o
          CROSS JOIN LATERAL usage_period_bounds(o.timezone, o.billing_anchor_day, '{period}',
                                                 '{instant}') b
          WHERE o.id = {org}
         ON CONFLICT DO NOTHING"
    ));
}

/// An organization's periods of one kind, oldest first.
pub fn org_periods(conn: &mut PgConnection, org: i64, period: &str) -> Vec<PeriodRow> {
    diesel::sql_query(
        "SELECT user_id, period_start, period_end, status, close_reason, requests, tokens, cost
           FROM usage_periods WHERE user_id = 0 AND org_id = $1 AND period = $2
          ORDER BY period_start",
    )
    .bind::<BigInt, _>(org)
    .bind::<Text, _>(period)
    .load(conn)
    .unwrap()
}

/// Count and token sum of the raw events spent in organization `org` in [from, to).
pub fn org_raw_sums(
    conn: &mut PgConnection,
    org: i64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> (i64, i64) {
    super::quota::raw_sums_where(conn, "org_id = $1", org, from, to)
}
