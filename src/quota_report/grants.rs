//! The grants part of a quota report: the subject's grants still usable, earliest expiry
//! first (the order they are drawn in), with what each has given and has left.

use std::fmt::Write as _;

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Int4, Numeric, Text, Timestamptz};
use serde_json::{Value, json};

use super::{format_amount, number};
use crate::format;

const GRANTS_SQL: &str = include_str!("sql/grants.sql");

/// One grant as the report shows it.
#[derive(Debug, Clone, QueryableByName)]
pub struct GrantRow {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub metric: String,
    #[diesel(sql_type = Text)]
    pub period: String,
    #[diesel(sql_type = Text)]
    pub kind: String,
    #[diesel(sql_type = Numeric)]
    pub amount: BigDecimal,
    /// What it has given so far, every event counted.
    #[diesel(sql_type = Numeric)]
    pub drawn: BigDecimal,
    #[diesel(sql_type = Timestamptz)]
    pub starts_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub expires_at: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    pub reason: String,
    #[diesel(sql_type = Int4)]
    pub starts_at_utc_offset: i32,
    #[diesel(sql_type = Int4)]
    pub expires_at_utc_offset: i32,
}

impl GrantRow {
    fn left(&self) -> BigDecimal {
        &self.amount - &self.drawn
    }
}

/// The grants of the subject (`user_id`, `org_id`) still usable at `at`.
pub fn load(
    conn: &mut PgConnection,
    (user_id, org_id): (i64, i64),
    at: DateTime<Utc>,
    zone: &str,
) -> QueryResult<Vec<GrantRow>> {
    diesel::sql_query(GRANTS_SQL)
        .bind::<BigInt, _>(user_id)
        .bind::<BigInt, _>(org_id)
        .bind::<Timestamptz, _>(at)
        .bind::<Text, _>(zone)
        .load(conn)
}

/// The table's lines of the grants, after the limits; nothing when there are none.
pub fn write_table(out: &mut String, grants: &[GrantRow], at: DateTime<Utc>, zone: &str) {
    if grants.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "grants (drawn past the plan's limit, earliest expiry first):"
    );
    for g in grants {
        let limit = if g.kind.is_empty() {
            format!("{}/{}", g.metric, g.period)
        } else {
            format!("{}/{} [{}]", g.metric, g.period, g.kind)
        };
        let starts = if g.starts_at > at {
            format!(
                "  starts {}",
                format::local_time(g.starts_at, g.starts_at_utc_offset).format("%Y-%m-%d %H:%M")
            )
        } else {
            String::new()
        };
        let reason = if g.reason.is_empty() {
            String::new()
        } else {
            format!("  {:?}", g.reason)
        };
        let _ = writeln!(
            out,
            "  #{}  {limit}  {} left of {}{starts}  expires {} {zone}{reason}",
            g.id,
            format_amount(&g.metric, &g.left()),
            format_amount(&g.metric, &g.amount),
            format::local_time(g.expires_at, g.expires_at_utc_offset).format("%Y-%m-%d %H:%M"),
        );
    }
}

/// The grants as JSON.
pub fn to_json(grants: &[GrantRow]) -> Value {
    grants
        .iter()
        .map(|g| {
            json!({
                "id": g.id,
                "metric": g.metric,
                "period": g.period,
                "kind": g.kind,
                "amount": number(&g.amount),
                "drawn": number(&g.drawn),
                "remaining": number(&g.left()),
                "starts_at": g.starts_at,
                "expires_at": g.expires_at,
                "reason": g.reason,
            })
        })
        .collect()
}
