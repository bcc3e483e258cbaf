//! `partitions`: keeps a monthly partition of `usage_events` ready for the current month and
//! `partitions.months_ahead` months after it, and moves rows that landed in the default
//! partition into partitions of their own months.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Months, NaiveDate, TimeZone, Utc};
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Date, Text, Timestamptz};
use serde_json::json;

use super::{Ctx, JobError, JobReport, RunOpts};

#[derive(QueryableByName)]
struct DefaultMonth {
    #[diesel(sql_type = Date)]
    month: NaiveDate,
    #[diesel(sql_type = BigInt)]
    rows: i64,
}

/// The name of the partition holding the month that starts on `month`.
pub fn partition_name(month: NaiveDate) -> String {
    format!("usage_events_{:04}_{:02}", month.year(), month.month())
}

fn month_start(at: DateTime<Utc>) -> NaiveDate {
    NaiveDate::from_ymd_opt(at.year(), at.month(), 1).unwrap_or(at.date_naive())
}

fn utc_midnight(day: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&day.and_time(chrono::NaiveTime::MIN))
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
        diesel::sql_query(
            "SELECT c.relname::text AS name,
                    pg_get_expr(c.relpartbound, c.oid) AS bound,
                    pg_total_relation_size(c.oid) AS bytes
               FROM pg_inherits i
               JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = 'usage_events'::regclass
              ORDER BY 1",
        )
        .load(conn)
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

    let stranded: Vec<DefaultMonth> = diesel::sql_query(
        "SELECT date_trunc('month', created_at AT TIME ZONE 'UTC')::date AS month, count(*) AS rows
           FROM usage_events_default
          GROUP BY 1 ORDER BY 1",
    )
    .load(conn)?;
    wanted.extend(stranded.iter().map(|m| m.month));

    let existing = existing_partitions(conn)?;
    let mut created = Vec::new();
    let mut moved_rows = 0i64;
    for month in wanted {
        opts.cancel.check()?;
        let name = partition_name(month);
        let rows_to_move = stranded
            .iter()
            .find(|m| m.month == month)
            .map_or(0, |m| m.rows);
        if existing.contains(&name) {
            continue;
        }
        if !opts.dry_run {
            create_partition(conn, month, &name)?;
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
    let summary = if created.is_empty() {
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
    Ok(JobReport::new(
        summary,
        json!({
            "created": created,
            "rows_moved_from_default": moved_rows,
            "existing": existing.len(),
            "dry_run": opts.dry_run,
        }),
    ))
}

/// Creates one month's partition. Rows of that month waiting in the default partition are
/// moved in the same transaction (PostgreSQL refuses the new partition while the default
/// one holds rows of its range); their `recorded_xid` is kept, so aggregation is unaffected.
fn create_partition(conn: &mut PgConnection, month: NaiveDate, name: &str) -> Result<(), JobError> {
    let from = utc_midnight(month);
    let to = utc_midnight(
        month
            .checked_add_months(Months::new(1))
            .ok_or_else(|| JobError::Invalid(format!("month {month} is out of range")))?,
    );
    conn.transaction(|conn| {
        // Inserts wait for this short transaction: one routed to the default partition and
        // committed between the move and CREATE TABLE would make PostgreSQL refuse the
        // partition ("default partition would be violated") and fail the run. The parent is
        // locked before the default partition, in the order an INSERT takes them, so the two
        // cannot deadlock.
        conn.batch_execute(
            "SET LOCAL lock_timeout = '10s';
             LOCK TABLE ONLY usage_events IN SHARE ROW EXCLUSIVE MODE;
             LOCK TABLE usage_events_default IN SHARE ROW EXCLUSIVE MODE;",
        )?;
        diesel::sql_query(
            "CREATE TEMP TABLE usage_events_moving ON COMMIT DROP AS
             WITH moved AS (
                 DELETE FROM usage_events_default
                  WHERE created_at >= $1 AND created_at < $2
              RETURNING *)
             SELECT * FROM moved",
        )
        .bind::<Timestamptz, _>(from)
        .bind::<Timestamptz, _>(to)
        .execute(conn)?;
        conn.batch_execute(&format!(
            "CREATE TABLE {name} PARTITION OF usage_events
                 FOR VALUES FROM ('{from}') TO ('{to}');
             INSERT INTO usage_events SELECT * FROM usage_events_moving;",
            from = from.to_rfc3339(),
            to = to.to_rfc3339(),
        ))?;
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
