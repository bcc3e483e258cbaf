//! `stats`: yesterday's totals for monitoring — events, active users, tokens and cost, by
//! kind and for the top models — logged at info and kept in the run's report.
//!
//! Read from the token summary, so "yesterday" is each user's local calendar day and the
//! figures include what `aggregate` had added when the job ran (the report says when the
//! watermark last moved). `--from D` reports day D instead. Sums past 2^63-1 are reported
//! as 2^63-1 with `clamped: true` rather than failing the job.

use chrono::{DateTime, Days, NaiveDate, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Date, Nullable, Text};
use serde::Serialize;
use serde_json::json;

use super::watermark;
use super::{Ctx, JobError, JobReport, RunOpts};

/// How many models the report lists, by tokens.
const TOP_MODELS: i64 = 5;

const TOTALS_SQL: &str = include_str!("sql/stats_totals.sql");
const BY_KIND_SQL: &str = include_str!("sql/stats_by_kind.sql");
const TOP_MODELS_SQL: &str = include_str!("sql/stats_top_models.sql");

#[derive(QueryableByName, Serialize)]
struct Totals {
    #[diesel(sql_type = BigInt)]
    active_users: i64,
    #[diesel(sql_type = BigInt)]
    events: i64,
    #[diesel(sql_type = BigInt)]
    tokens: i64,
    #[diesel(sql_type = Text)]
    cost: String,
    #[diesel(sql_type = Bool)]
    clamped: bool,
}

/// The totals of one kind or model.
#[derive(QueryableByName, Serialize)]
struct Breakdown {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(embed)]
    #[serde(flatten)]
    totals: Totals,
}

/// What a breakdown of the day's totals is by.
#[derive(Clone, Copy)]
enum Dimension {
    /// Every event kind, most events first.
    Kind,
    /// The TOP_MODELS models with the most tokens (events without a model left out).
    Model,
}

/// The day's totals per kind or per model; sums past 2^63-1 are clamped as in the totals.
fn breakdown(
    conn: &mut PgConnection,
    day: NaiveDate,
    by: Dimension,
) -> Result<Vec<Breakdown>, JobError> {
    let (sql, limit) = match by {
        Dimension::Kind => (BY_KIND_SQL, None),
        Dimension::Model => (TOP_MODELS_SQL, Some(TOP_MODELS)),
    };
    // `LIMIT NULL` is no limit.
    let breakdown = diesel::sql_query(sql)
        .bind::<Date, _>(day)
        .bind::<Nullable<BigInt>, _>(limit)
        .load(conn)?;
    Ok(breakdown)
}

pub fn run(
    _ctx: &Ctx,
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    opts: &RunOpts,
) -> Result<JobReport, JobError> {
    if opts.user_id.is_some() || opts.to.is_some_and(|to| Some(to) != opts.from) {
        return Err(JobError::Invalid(
            "stats: reports one day for every user; give at most --from DAY (no --to, no --user)"
                .into(),
        ));
    }
    let day = match opts.from {
        Some(day) => day,
        None => yesterday(now)?,
    };
    let totals: Totals = diesel::sql_query(TOTALS_SQL)
        .bind::<Date, _>(day)
        .get_result(conn)?;
    let by_kind = breakdown(conn, day, Dimension::Kind)?;
    let top_models = breakdown(conn, day, Dimension::Model)?;
    let watermark = watermark::read(conn)?;

    tracing::info!(
        job.name = "stats",
        stats.day = %day,
        stats.events = totals.events,
        stats.active_users = totals.active_users,
        stats.tokens = totals.tokens,
        stats.cost = %totals.cost,
        stats.by_kind = %by_kind.iter().map(|k| format!("{}={}", k.name, k.totals.events)).collect::<Vec<_>>().join(","),
        stats.top_models = %top_models.iter().map(|m| format!("{}={}", m.name, m.totals.tokens)).collect::<Vec<_>>().join(","),
        "daily statistics"
    );
    Ok(JobReport::new(
        format!(
            "{day}: {} event(s), {} active user(s), {} token(s), cost {}",
            totals.events, totals.active_users, totals.tokens, totals.cost
        ),
        json!({
            "day": day,
            "totals": totals,
            "by_kind": by_kind,
            "top_models": top_models,
            "aggregated_until": watermark.updated_at,
        }),
    ))
}

fn yesterday(now: DateTime<Utc>) -> Result<NaiveDate, JobError> {
    now.date_naive()
        .checked_sub_days(Days::new(1))
        .ok_or_else(|| JobError::Invalid(format!("stats: no day before {now}")))
}
