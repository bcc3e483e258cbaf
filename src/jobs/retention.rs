//! `retention`: deletes usage data older than `retention.events_months` (default 24).
//!
//! Whole monthly partitions of `usage_events` that end at or before the cutoff are dropped
//! (a metadata change, not hours of DELETE I/O); only the partition straddling the cutoff and
//! the default partition are trimmed, in short batched transactions so concurrent inserts
//! never wait long. Events not yet aggregated (`recorded_xid` at or above the watermark) are
//! never deleted: the job stops short of them and reports them. Partitions are detached and
//! dropped in two transactions (`month_drop`), as the schema's owner (the daemon's role owns
//! nothing), after a check under the detach's own locks that nothing in them is unaggregated.
//!
//! The other tables are trimmed in batches by their own settings, among them the
//! idempotency keys of `usage_record()` once older than `ingest.idempotency_days`.

use std::borrow::Cow;

use chrono::{DateTime, Months, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text, Timestamptz};
use serde_json::json;

use super::watermark;
use super::{Ctx, JobError, JobReport, RunOpts, partitions};

mod month_drop;
use crate::config::{RetentionSettings, Settings};
use crate::db::{Count, Flag};

/// The job as `--list-jobs` describes it, with the retention in effect.
pub fn description(settings: &Settings) -> String {
    let months = settings.retention.events_months.get();
    format!(
        "deletes usage data older than {months} month{}: drops whole partitions, trims the boundary month in batches",
        if months == 1 { "" } else { "s" }
    )
}

const RECORDED_CUTOFF_SQL: &str = include_str!("sql/retention_recorded_cutoff.sql");
const DELETE_TOKEN_USAGE_DAILY_SQL: &str =
    include_str!("sql/retention_delete_token_usage_daily.sql");
const DELETE_USAGE_PERIODS_SQL: &str = include_str!("sql/retention_delete_usage_periods.sql");
const DELETE_QUOTA_ALERTS_SQL: &str = include_str!("sql/retention_delete_quota_alerts.sql");
const COUNT_JOB_RUNS_SQL: &str = include_str!("sql/retention_count_job_runs.sql");
const DELETE_JOB_RUNS_SQL: &str = include_str!("sql/retention_delete_job_runs.sql");
const DELETE_IDEMPOTENCY_KEYS_SQL: &str = include_str!("sql/retention_delete_idempotency_keys.sql");

/// The instant before which events are deleted.
pub fn cutoff(now: DateTime<Utc>, months: u32) -> DateTime<Utc> {
    now.checked_sub_months(Months::new(months))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// From when `usage_events` can be trusted to hold every event, and why.
#[derive(Debug, Clone)]
pub struct EventsHorizon {
    pub kept_from: DateTime<Utc>,
    /// What sets `kept_from`, for reports: the setting, or the run that deleted up to it.
    pub reason: String,
}

#[derive(QueryableByName)]
struct RecordedCutoff {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Timestamptz)]
    started_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    cutoff: DateTime<Utc>,
}

/// The later of the cutoff `retention.events_months` gives at `now` and the latest cutoff a
/// retention run deleted up to: a shorter setting in the past may have deleted more than
/// the current one would. The run with that cutoff is kept in `job_runs` for this.
pub fn events_horizon(
    conn: &mut PgConnection,
    settings: &RetentionSettings,
    now: DateTime<Utc>,
) -> Result<EventsHorizon, JobError> {
    let months = settings.events_months.get();
    let by_setting = cutoff(now, months);
    let recorded: Option<RecordedCutoff> = diesel::sql_query(RECORDED_CUTOFF_SQL)
        .get_result(conn)
        .optional()?;
    Ok(match recorded {
        Some(run) if run.cutoff > by_setting => EventsHorizon {
            kept_from: run.cutoff,
            reason: format!(
                "retention run {} of {} deleted events up to then, under a shorter retention.events_months",
                run.id,
                run.started_at.format("%Y-%m-%d %H:%M:%SZ")
            ),
        },
        _ => EventsHorizon {
            kept_from: by_setting,
            reason: format!("retention.events_months = {months}"),
        },
    })
}

// The statements on one partition of `usage_events` name it: its name comes from the catalog
// (`partitions::list`), and no parameter can carry a table's name. `$1` = the cutoff, `$2` =
// the watermark (events at or above it are not aggregated yet).

/// Whether the partition holds an event not yet aggregated: one probe of its recorded_xid
/// index (its maximum) instead of a count.
fn has_unaggregated(conn: &mut PgConnection, partition: &str, xid: &str) -> Result<bool, JobError> {
    let row: Flag = diesel::sql_query(format!(
        "SELECT COALESCE(max(recorded_xid) >= $1::xid8, false) AS value FROM {partition}"
    ))
    .bind::<Text, _>(xid)
    .get_result(conn)?;
    Ok(row.value)
}

/// The partition's events from before the cutoff that are not aggregated yet (kept).
fn count_unaggregated(
    conn: &mut PgConnection,
    partition: &str,
    cutoff: DateTime<Utc>,
    xid: &str,
) -> Result<i64, JobError> {
    let row: Count = diesel::sql_query(format!(
        "SELECT count(*) AS n FROM {partition} WHERE created_at < $1 AND recorded_xid >= $2::xid8"
    ))
    .bind::<Timestamptz, _>(cutoff)
    .bind::<Text, _>(xid)
    .get_result(conn)?;
    Ok(row.n)
}

/// The partition's aggregated events from before the cutoff, deleted in batches (`$3` = the
/// batch size). The delete is built at run time though it is more than a one-liner (the
/// exception docs/DESIGN.md names): a `DELETE` takes no `LIMIT`, so a batch is chosen by a
/// subquery on the same partition, which has to be named twice.
fn aggregated_events(partition: &str, cutoff: DateTime<Utc>, xid: &str) -> DeleteRule {
    DeleteRule {
        table: partition.to_string(),
        count_sql: Cow::Owned(format!(
            "SELECT count(*) AS n FROM {partition} WHERE created_at < $1 AND recorded_xid < $2::xid8"
        )),
        delete_sql: Cow::Owned(format!(
            "DELETE FROM {partition} t USING (
                 SELECT ctid FROM {partition}
                  WHERE created_at < $1 AND recorded_xid < $2::xid8 LIMIT $3
             ) doomed WHERE t.ctid = doomed.ctid"
        )),
        cutoff,
        xid: Some(xid.to_string()),
    }
}

/// What happened (or would happen) to `usage_events`.
#[derive(Default)]
struct EventOutcome {
    dropped: Vec<String>,
    freed_bytes: i64,
    rows_deleted: i64,
    not_aggregated: i64,
}

pub fn run(
    ctx: &Ctx,
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    opts: &RunOpts,
) -> Result<JobReport, JobError> {
    let settings = &ctx.settings.retention;
    let started = std::time::Instant::now();
    let event_cutoff = cutoff(now, settings.events_months.get());
    let events = retire_events(conn, settings, event_cutoff, opts)?;

    let mut tables = serde_json::Map::new();
    tables.insert(
        "usage_events".into(),
        json!({
            "cutoff": event_cutoff,
            "partitions_dropped": events.dropped,
            "rows_deleted": events.rows_deleted,
            "not_aggregated_kept": events.not_aggregated,
            "bytes_freed_estimate": events.freed_bytes,
        }),
    );
    let mut other_rows = 0;
    let idempotency_days = idempotency_window(conn)?;
    for rule in other_tables(settings, now, idempotency_days) {
        opts.cancel.check()?;
        let deleted = if opts.dry_run {
            count_where(conn, &rule)?
        } else {
            delete_in_batches(conn, &rule, settings, opts)?
        };
        other_rows += deleted;
        tables.insert(
            rule.table.to_string(),
            json!({ "cutoff": rule.cutoff, "rows_deleted": deleted }),
        );
    }
    if events.not_aggregated > 0 {
        tracing::warn!(
            rows = events.not_aggregated,
            "old events not yet aggregated were kept; run the aggregate job, then retention again"
        );
    }
    let verb = if opts.dry_run {
        "would drop"
    } else {
        "dropped"
    };
    let summary = format!(
        "{verb} {} partition(s), {} event row(s) and {} other row(s) before {}{}",
        events.dropped.len(),
        events.rows_deleted,
        other_rows,
        event_cutoff.format("%Y-%m-%d %H:%M:%SZ"),
        if events.not_aggregated > 0 {
            format!(
                "; kept {} old event(s) not yet aggregated",
                events.not_aggregated
            )
        } else {
            String::new()
        }
    );
    Ok(JobReport::new(
        summary,
        json!({
            "dry_run": opts.dry_run,
            "tables": tables,
            "duration_ms": started.elapsed().as_millis() as u64,
        }),
    ))
}

fn retire_events(
    conn: &mut PgConnection,
    settings: &RetentionSettings,
    cutoff: DateTime<Utc>,
    opts: &RunOpts,
) -> Result<EventOutcome, JobError> {
    let xid = watermark::read(conn)?.xid.to_string();
    let mut outcome = EventOutcome::default();
    if !opts.dry_run {
        outcome.dropped = month_drop::drop_leftovers(conn)?;
    }
    let mut droppable = Vec::new();
    for partition in partitions::list(conn)? {
        opts.cancel.check()?;
        let whole = partition.to.is_some_and(|to| to <= cutoff);
        let straddles = match (partition.from, partition.to) {
            (Some(from), Some(to)) => from < cutoff && cutoff < to,
            _ => true, // the default partition can hold rows of any age
        };
        if !whole && !straddles {
            continue;
        }
        // The common case, a whole old month with nothing unaggregated, is answered by one
        // probe of the recorded_xid index (its maximum) instead of a count.
        let kept = if whole && !has_unaggregated(conn, &partition.name, &xid)? {
            0
        } else {
            count_unaggregated(conn, &partition.name, cutoff, &xid)?
        };
        outcome.not_aggregated += kept;
        if whole && kept == 0 {
            droppable.push(partition);
            continue;
        }
        let rule = aggregated_events(&partition.name, cutoff, &xid);
        let deleted = if opts.dry_run {
            count_where(conn, &rule)?
        } else {
            delete_in_batches(conn, &rule, settings, opts)?
        };
        if deleted > 0 {
            tracing::info!(partition = %partition.name, rows.deleted = deleted, dry_run = opts.dry_run, "old events deleted");
        }
        outcome.rows_deleted += deleted;
    }
    for partition in droppable {
        opts.cancel.check()?;
        if !opts.dry_run && !month_drop::drop_month(conn, &partition.name, cutoff, settings)? {
            // An event committed into it after the probe above: kept, counted by a later
            // `aggregate`, and the partition dropped by a later run.
            outcome.not_aggregated +=
                count_unaggregated(conn, &partition.name, cutoff, &xid)?.max(1);
            tracing::info!(partition = %partition.name, "partition kept: an event not yet aggregated arrived in it");
            continue;
        }
        tracing::info!(partition = %partition.name, dry_run = opts.dry_run, "partition dropped");
        outcome.freed_bytes += partition.bytes;
        outcome.dropped.push(partition.name);
    }
    Ok(outcome)
}

/// Rows of one table older than a cutoff, deleted in batches.
struct DeleteRule {
    table: String,
    /// Counts the rows: `$1` = cutoff (and `$2` = watermark when `xid` is set).
    count_sql: Cow<'static, str>,
    /// Deletes one batch of them: the same binds, then the batch size.
    delete_sql: Cow<'static, str>,
    cutoff: DateTime<Utc>,
    xid: Option<String>,
}

/// The window `usage_record()` remembers idempotency keys for (`ingest.idempotency_days`, as
/// the worker last wrote it): keys older than it are taken over by a new event anyway, so
/// deleting them changes no answer. None when `usage_settings` has no row: keys never expire.
fn idempotency_window(conn: &mut PgConnection) -> Result<Option<i32>, JobError> {
    #[derive(QueryableByName)]
    struct Window {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        idempotency_days: i32,
    }
    let window: Option<Window> =
        diesel::sql_query("SELECT idempotency_days FROM usage_settings WHERE singleton")
            .get_result(conn)
            .optional()?;
    Ok(window.map(|w| w.idempotency_days))
}

/// The tables other than `usage_events`, each with its own retention setting.
fn other_tables(
    settings: &RetentionSettings,
    now: DateTime<Utc>,
    idempotency_days: Option<i32>,
) -> Vec<DeleteRule> {
    let rule = |table: &str, count_sql, delete_sql, cutoff| DeleteRule {
        table: table.to_string(),
        count_sql: Cow::Borrowed(count_sql),
        delete_sql: Cow::Borrowed(delete_sql),
        cutoff,
        xid: None,
    };
    let mut rules = vec![
        // `day` is a local date; a day is dropped once it lies wholly before the cutoff date.
        rule(
            "token_usage_daily",
            "SELECT count(*) AS n FROM token_usage_daily WHERE day < ($1 AT TIME ZONE 'UTC')::date",
            DELETE_TOKEN_USAGE_DAILY_SQL,
            cutoff(now, settings.token_usage_daily_months.get()),
        ),
        // Closed periods only; their per-kind totals go with them (ON DELETE CASCADE).
        rule(
            "usage_periods",
            "SELECT count(*) AS n FROM usage_periods WHERE status = 'closed' AND period_end < $1",
            DELETE_USAGE_PERIODS_SQL,
            cutoff(now, settings.usage_periods_months.get()),
        ),
        // Alerts still waiting to be delivered are never deleted.
        rule(
            "quota_alerts",
            "SELECT count(*) AS n FROM quota_alerts \
             WHERE period_start < $1 AND status NOT IN ('pending', 'sending')",
            DELETE_QUOTA_ALERTS_SQL,
            cutoff(now, settings.quota_alerts_months.get()),
        ),
        // The run that deleted events up to the latest instant stays: it tells a rebuild
        // which days lost their raw events (see `events_horizon`).
        rule(
            "job_runs",
            COUNT_JOB_RUNS_SQL,
            DELETE_JOB_RUNS_SQL,
            now - chrono::Duration::days(i64::from(settings.job_runs_days.get())),
        ),
    ];
    if let Some(days) = idempotency_days {
        rules.push(rule(
            "usage_idempotency_keys",
            "SELECT count(*) AS n FROM usage_idempotency_keys WHERE recorded_at < $1",
            DELETE_IDEMPOTENCY_KEYS_SQL,
            now - chrono::Duration::days(i64::from(days)),
        ));
    }
    rules
}

fn count_where(conn: &mut PgConnection, rule: &DeleteRule) -> Result<i64, JobError> {
    let query = diesel::sql_query(rule.count_sql.as_ref()).bind::<Timestamptz, _>(rule.cutoff);
    let row: Count = match &rule.xid {
        Some(xid) => query.bind::<Text, _>(xid).get_result(conn)?,
        None => query.get_result(conn)?,
    };
    Ok(row.n)
}

/// Deletes matching rows `retention.batch_size` at a time, each batch its own transaction.
fn delete_in_batches(
    conn: &mut PgConnection,
    rule: &DeleteRule,
    settings: &RetentionSettings,
    opts: &RunOpts,
) -> Result<i64, JobError> {
    let batch = i64::from(settings.batch_size);
    let mut total = 0i64;
    loop {
        opts.cancel.check()?;
        let query = diesel::sql_query(rule.delete_sql.as_ref()).bind::<Timestamptz, _>(rule.cutoff);
        let deleted = match &rule.xid {
            Some(xid) => query
                .bind::<Text, _>(xid)
                .bind::<BigInt, _>(batch)
                .execute(conn)?,
            None => query.bind::<BigInt, _>(batch).execute(conn)?,
        };
        total += deleted as i64;
        if deleted < settings.batch_size as usize {
            return Ok(total);
        }
    }
}
