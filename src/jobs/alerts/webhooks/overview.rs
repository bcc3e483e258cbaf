//! What the webhook channel would do and has done: the dry run's lines, and deliveries by
//! endpoint host, status and error class for `--status` and `/metrics`.

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Nullable, Text, Timestamptz};

use super::targets;
use crate::jobs::alerts::Preview;
use crate::jobs::{Ctx, JobError};
use crate::mail::webhook;

const DUE_SQL: &str = include_str!("../../sql/webhooks_due.sql");
const OUTCOME_COUNTS_SQL: &str = include_str!("../../sql/webhooks_outcome_counts.sql");

/// `--dry-run`: the deliveries the alerts to be decided would make, one line each, and how
/// many recorded ones are due.
pub(in crate::jobs::alerts) fn preview(
    ctx: &Ctx,
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    candidates: &[Preview],
    user_id: Option<i64>,
) -> Result<(Vec<String>, i64), JobError> {
    let targets = targets(ctx)?;
    let mut lines = Vec::new();
    for c in candidates.iter().filter(|c| c.carries_webhook) {
        let event = webhook::event_type(&c.alert, c.threshold, &c.used_value, &c.limit_value);
        let subject = match c.org_id {
            0 => format!("user {}", c.user_id),
            org => format!("org {org}"),
        };
        for target in targets.iter().filter(|t| t.endpoint.wants(event)) {
            let what = match c.alert.as_str() {
                "quota" => format!("{}% of {} {}", c.threshold, c.period, c.metric),
                alert => format!("{alert} of {} {}", c.period, c.metric),
            };
            lines.push(format!(
                "webhook to {}: would send {event} for {subject} ({what})",
                target.host
            ));
        }
    }
    let due: crate::db::Count = diesel::sql_query(DUE_SQL)
        .bind::<Timestamptz, _>(now)
        .bind::<Nullable<BigInt>, _>(user_id)
        .get_result(conn)?;
    Ok((lines, due.n))
}

/// Deliveries by endpoint host, status and error class (`--status`, `/metrics`).
#[derive(QueryableByName, Debug, Clone)]
pub struct OutcomeCount {
    #[diesel(sql_type = Text)]
    pub host: String,
    #[diesel(sql_type = Text)]
    pub status: String,
    /// The last error's class; `none` for a delivered one, or one that met no error.
    #[diesel(sql_type = Text)]
    pub class: String,
    #[diesel(sql_type = Bool)]
    pub endpoint_disabled: bool,
    #[diesel(sql_type = BigInt)]
    pub n: i64,
}

/// The counts, or `None` when the tables do not exist (an older schema).
pub fn outcome_counts(conn: &mut PgConnection) -> QueryResult<Option<Vec<OutcomeCount>>> {
    let exists: crate::db::Flag =
        diesel::sql_query("SELECT to_regclass('webhook_deliveries') IS NOT NULL AS value")
            .get_result(conn)?;
    if !exists.value {
        return Ok(None);
    }
    diesel::sql_query(OUTCOME_COUNTS_SQL).load(conn).map(Some)
}
