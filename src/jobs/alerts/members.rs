//! The largest users of an organization's quota, named in its alert emails: one query for
//! every organization alert of a claimed batch.

use std::collections::{BTreeMap, BTreeSet};

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Numeric, Text, Timestamptz};

use super::ClaimedAlert;
use crate::mail::content::MemberFacts;

const TOP_MEMBERS_SQL: &str = include_str!("../sql/alerts_top_members.sql");

/// What the usage of one period is counted by: (organization, metric, event kind, start,
/// end). The end tells a day period from a month period starting at the same instant.
type UsageKey = (i64, String, String, DateTime<Utc>, DateTime<Utc>);

fn key_of(alert: &ClaimedAlert) -> UsageKey {
    (
        alert.org_id,
        alert.metric.clone(),
        alert.kind.clone(),
        alert.period_start,
        alert.period_end,
    )
}

#[derive(QueryableByName)]
struct TopMember {
    #[diesel(sql_type = BigInt)]
    org_id: i64,
    #[diesel(sql_type = Text)]
    metric: String,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Timestamptz)]
    period_start: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    period_end: DateTime<Utc>,
    #[diesel(sql_type = BigInt)]
    user_id: i64,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Numeric)]
    used: BigDecimal,
}

/// The largest users behind each organization alert of `batch`, largest first.
#[derive(Default)]
pub(super) struct TopMembers(BTreeMap<UsageKey, Vec<MemberFacts>>);

impl TopMembers {
    pub(super) fn load(conn: &mut PgConnection, batch: &[ClaimedAlert]) -> QueryResult<Self> {
        let periods: BTreeSet<UsageKey> =
            batch.iter().filter(|a| a.org_id != 0).map(key_of).collect();
        if periods.is_empty() {
            return Ok(TopMembers::default());
        }
        let orgs: Vec<i64> = periods.iter().map(|k| k.0).collect();
        let metrics: Vec<&str> = periods.iter().map(|k| k.1.as_str()).collect();
        let kinds: Vec<&str> = periods.iter().map(|k| k.2.as_str()).collect();
        let starts: Vec<DateTime<Utc>> = periods.iter().map(|k| k.3).collect();
        let ends: Vec<DateTime<Utc>> = periods.iter().map(|k| k.4).collect();
        let rows: Vec<TopMember> = diesel::sql_query(TOP_MEMBERS_SQL)
            .bind::<Array<BigInt>, _>(&orgs)
            .bind::<Array<Text>, _>(&metrics)
            .bind::<Array<Text>, _>(&kinds)
            .bind::<Array<Timestamptz>, _>(&starts)
            .bind::<Array<Timestamptz>, _>(&ends)
            .load(conn)?;
        let mut top: BTreeMap<UsageKey, Vec<MemberFacts>> = BTreeMap::new();
        for row in rows {
            top.entry((
                row.org_id,
                row.metric,
                row.kind,
                row.period_start,
                row.period_end,
            ))
            .or_default()
            .push(MemberFacts {
                user_id: row.user_id,
                name: row.name,
                used: row.used,
            });
        }
        Ok(TopMembers(top))
    }

    /// The largest users of `alert`'s organization, metric and period (none for a personal
    /// alert, or when the summary has no usage for it yet).
    pub(super) fn of(&self, alert: &ClaimedAlert) -> Vec<MemberFacts> {
        self.0.get(&key_of(alert)).cloned().unwrap_or_default()
    }
}
