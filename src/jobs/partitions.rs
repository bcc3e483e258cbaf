//! `partitions`: keeps a monthly partition of `usage_events` ready for the current month and
//! `partitions.months_ahead` months after it, and moves rows that landed in the default
//! partition into partitions of their own months.
//!
//! Rows the event bounds refuse (from before them) never stop the job: a `created_at` outside
//! the bounds has no month to go to and stays in the default partition; a month whose rows
//! in the default partition break a bound gets no partition (moving them in would fail the
//! bound) until they are repaired. Both are reported and logged.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Date, Integer, Nullable, Text};
use serde_json::json;

use super::{Ctx, JobError, JobReport, RunOpts};
use crate::db::Flag;

const UNVALIDATED_BOUNDS_SQL: &str = include_str!("sql/partitions_unvalidated_bounds.sql");
const LIST_SQL: &str = include_str!("sql/partitions_list.sql");

#[derive(QueryableByName)]
struct DefaultMonth {
    /// `None` for rows whose `created_at` lies outside the event bounds.
    #[diesel(sql_type = Nullable<Date>)]
    month: Option<NaiveDate>,
    #[diesel(sql_type = BigInt)]
    rows: i64,
    /// Rows that break a bound not yet validated (`NOT VALID`): they cannot move.
    #[diesel(sql_type = BigInt)]
    refused: i64,
    #[diesel(sql_type = Array<BigInt>)]
    sample_ids: Vec<i64>,
}

#[derive(QueryableByName)]
struct Predicate {
    #[diesel(sql_type = Text)]
    sql: String,
}

/// The rows of the default partition by month, with the rows of each month that the bounds
/// of `usage_events` refuse. The bounds are read from the catalog (every CHECK not yet
/// validated), so this list follows the migrations; the created_at range is that of
/// `usage_events_created_at_in_range`, outside which no month is computed.
fn default_partition_months(conn: &mut PgConnection) -> Result<Vec<DefaultMonth>, JobError> {
    let predicate: Predicate = diesel::sql_query(UNVALIDATED_BOUNDS_SQL).get_result(conn)?;
    // Built at run time (the exception docs/DESIGN.md names): the bounds are SQL text read
    // from the catalog, which no parameter can carry, and they follow the migrations.
    Ok(diesel::sql_query(format!(
        "SELECT CASE WHEN created_at >= '1990-01-01 00:00:00+00' AND created_at < '2200-01-01 00:00:00+00'
                     THEN date_trunc('month', created_at AT TIME ZONE 'UTC')::date END AS month,
                count(*) AS rows,
                count(*) FILTER (WHERE NOT COALESCE({bounds}, true)) AS refused,
                COALESCE((array_agg(id ORDER BY id)
                              FILTER (WHERE NOT COALESCE({bounds}, true)))[1:$1], '{{}}')
                    AS sample_ids
           FROM usage_events_default
          GROUP BY 1 ORDER BY 1",
        bounds = predicate.sql,
    ))
    .bind::<Integer, _>(LIST_LIMIT)
    .load(conn)?)
}

/// How many event ids a report lists per month (the counts are complete).
const LIST_LIMIT: i32 = 20;

/// The name of the partition holding the month that starts on `month`.
pub fn partition_name(month: NaiveDate) -> String {
    format!("usage_events_{:04}_{:02}", month.year(), month.month())
}

fn month_start(at: DateTime<Utc>) -> NaiveDate {
    NaiveDate::from_ymd_opt(at.year(), at.month(), 1).unwrap_or(at.date_naive())
}

#[derive(QueryableByName, Debug)]
struct PartitionBound {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    bound: String,
    #[diesel(sql_type = BigInt)]
    bytes: i64,
}

/// A partition of `usage_events` with its range; `None` bounds for the default partition.
#[derive(Debug, Clone)]
pub struct Partition {
    pub name: String,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub bytes: i64,
}

/// The partitions of `usage_events` (the default one too) with their bounds and sizes, read
/// from the catalog, by name.
pub fn list(conn: &mut PgConnection) -> Result<Vec<Partition>, JobError> {
    // Bounds are printed in the session's time zone: read them in UTC, for this statement's
    // transaction only, so a pooled connection keeps its zone.
    let rows: Vec<PartitionBound> = conn.transaction(|conn| {
        conn.batch_execute("SET LOCAL TIME ZONE 'UTC'")?;
        diesel::sql_query(LIST_SQL).load(conn)
    })?;
    rows.into_iter()
        .map(|row| {
            if row.bound == "DEFAULT" {
                return Ok(Partition {
                    name: row.name,
                    from: None,
                    to: None,
                    bytes: row.bytes,
                });
            }
            let quoted: Vec<&str> = row.bound.split('\'').skip(1).step_by(2).collect();
            let parse = |text: Option<&&str>| {
                text.and_then(|t| DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%#z").ok())
                    .map(|t| t.with_timezone(&Utc))
            };
            match (parse(quoted.first()), parse(quoted.get(1))) {
                (Some(from), Some(to)) => Ok(Partition {
                    name: row.name,
                    from: Some(from),
                    to: Some(to),
                    bytes: row.bytes,
                }),
                _ => Err(JobError::Invalid(format!(
                    "partition {} has bounds `{}` that cannot be read; \
                     usage_events partitions must be ranges of created_at",
                    row.name, row.bound
                ))),
            }
        })
        .collect()
}

/// Names of the partitions attached to `usage_events` (the default one excluded).
pub fn existing_partitions(conn: &mut PgConnection) -> Result<BTreeSet<String>, JobError> {
    Ok(list(conn)?
        .into_iter()
        .filter(|p| p.from.is_some())
        .map(|p| p.name)
        .collect())
}

pub fn run(
    ctx: &Ctx,
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    opts: &RunOpts,
) -> Result<JobReport, JobError> {
    let months_ahead = ctx.settings.partitions.months_ahead;
    let first = month_start(now);
    let mut wanted: BTreeSet<NaiveDate> = (0..=months_ahead)
        .filter_map(|i| first.checked_add_months(Months::new(i)))
        .collect();

    let stranded = default_partition_months(conn)?;
    wanted.extend(stranded.iter().filter_map(|m| m.month));
    let left_behind = report_left_behind(&stranded);

    let existing = existing_partitions(conn)?;
    let mut created = Vec::new();
    let mut moved_rows = 0i64;
    for month in wanted {
        opts.cancel.check()?;
        let name = partition_name(month);
        let stranded_here = stranded.iter().find(|m| m.month == Some(month));
        let rows_to_move = stranded_here.map_or(0, |m| m.rows);
        if existing.contains(&name) || stranded_here.is_some_and(|m| m.refused > 0) {
            continue;
        }
        if !opts.dry_run {
            create_partition(conn, month)?;
        }
        tracing::info!(
            partition = %name,
            rows.moved = rows_to_move,
            dry_run = opts.dry_run,
            "partition created"
        );
        created.push(name);
        moved_rows += rows_to_move;
    }
    let verb = if opts.dry_run {
        "would create"
    } else {
        "created"
    };
    let mut summary = if created.is_empty() {
        format!(
            "all {} partitions present ({} through {})",
            months_ahead + 1,
            partition_name(first),
            partition_name(
                first
                    .checked_add_months(Months::new(months_ahead))
                    .unwrap_or(first)
            )
        )
    } else {
        format!(
            "{verb} {} partition(s): {}; {} row(s) moved out of the default partition",
            created.len(),
            created.join(", "),
            moved_rows
        )
    };
    summary += &left_behind.summary();
    Ok(JobReport::new(
        summary,
        json!({
            "created": created,
            "rows_moved_from_default": moved_rows,
            "existing": existing.len(),
            "dry_run": opts.dry_run,
            "out_of_range_rows": left_behind.out_of_range_rows,
            "out_of_range_event_ids": left_behind.out_of_range_ids,
            "skipped": left_behind.skipped,
        }),
    ))
}

/// Rows of the default partition this run leaves there, as the report lists them.
struct LeftBehind {
    out_of_range_rows: i64,
    out_of_range_ids: Vec<i64>,
    skipped: Vec<serde_json::Value>,
}

impl LeftBehind {
    /// What the run's summary line adds; empty when nothing was left behind.
    fn summary(&self) -> String {
        if self.skipped.is_empty() && self.out_of_range_rows == 0 {
            return String::new();
        }
        format!(
            "; left in the default partition: {} row(s) dated outside 1990..2199, {} month(s) \
             with rows the event bounds refuse",
            self.out_of_range_rows,
            self.skipped.len()
        )
    }
}

/// Logs the rows of the default partition that cannot move (ids only) and lists them.
fn report_left_behind(stranded: &[DefaultMonth]) -> LeftBehind {
    let mut left = LeftBehind {
        out_of_range_rows: 0,
        out_of_range_ids: Vec::new(),
        skipped: Vec::new(),
    };
    for m in stranded {
        match m.month {
            None => {
                left.out_of_range_rows = m.rows;
                left.out_of_range_ids = m.sample_ids.clone();
                tracing::warn!(
                    job.name = "partitions",
                    rows = m.rows,
                    events.ids = ?m.sample_ids,
                    "events dated outside 1990-01-01..2200-01-01 stay in the default partition \
                     (aggregate sets them aside); correct or delete them"
                );
            }
            Some(month) if m.refused > 0 => {
                let name = partition_name(month);
                tracing::warn!(
                    job.name = "partitions",
                    partition = %name,
                    rows = m.refused,
                    events.ids = ?m.sample_ids,
                    "partition not created: rows of its month in the default partition break the \
                     event bounds and cannot move; correct or delete them (docs/OPERATIONS.md, \
                     \"Quarantined events\")"
                );
                left.skipped.push(json!({
                    "partition": name,
                    "rows_refused": m.refused,
                    "event_ids": m.sample_ids,
                }));
            }
            Some(_) => {}
        }
    }
    left
}

/// Creates one month's partition through `usage_create_partition`, which runs as the
/// schema's owner (the daemon's role owns nothing) and moves that month's rows out of the
/// default partition in the same short transaction; inserts wait for it, at most 10 s.
fn create_partition(conn: &mut PgConnection, month: NaiveDate) -> Result<(), JobError> {
    conn.transaction(|conn| {
        conn.batch_execute("SET LOCAL lock_timeout = '10s'")?;
        diesel::sql_query("SELECT usage_create_partition($1) AS value")
            .bind::<Date, _>(month)
            .get_result::<Flag>(conn)?;
        Ok::<_, diesel::result::Error>(())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_sort_by_month() {
        let jan = NaiveDate::from_ymd_opt(2027, 1, 1).unwrap();
        let dec = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        assert_eq!(partition_name(jan), "usage_events_2027_01");
        assert!(partition_name(dec) < partition_name(jan));
    }
}
