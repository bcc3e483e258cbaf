//! Quota periods: what `reset-daily` and `reset-monthly` share. Closing ended periods at
//! rollover (reconciled against the raw events), opening their successors, and manual resets
//! of one user. Period bounds come from the SQL function `usage_period_bounds`, the single
//! implementation of "when does this user's day or month start".

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Numeric, Text, Timestamptz};
use serde_json::json;

use super::{Ctx, JobError, JobReport, RunOpts};

/// Periods closed per transaction (aggregate waits for each one, a few seconds at most); a
/// batch's successors that have already ended (after downtime) are closed by a later batch
/// of the same run.
const CLOSE_BATCH_SIZE: i64 = 50_000;
/// Drift warnings logged one by one per run; the rest are counted.
const DRIFT_WARNINGS_LOGGED: usize = 100;
/// Drift rows kept in the run report.
const DRIFT_SAMPLES_REPORTED: usize = 20;

const DUE_SQL: &str = include_str!("sql/reset_due.sql");
const RAW_SQL: &str = include_str!("sql/reset_raw.sql");
const DRIFT_SQL: &str = include_str!("sql/reset_drift.sql");
const APPLY_SQL: &str = include_str!("sql/reset_apply.sql");
const CLOSE_SQL: &str = include_str!("sql/reset_close.sql");
const SUCCESSORS_SQL: &str = include_str!("sql/reset_successors.sql");

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

/// One value where recorded totals and raw events disagreed.
#[derive(Debug, Clone, QueryableByName, serde::Serialize)]
pub struct Drift {
    #[diesel(sql_type = BigInt)]
    pub user_id: i64,
    #[diesel(sql_type = Timestamptz)]
    pub period_start: DateTime<Utc>,
    /// '' for the period's totals over all kinds.
    #[diesel(sql_type = Text)]
    pub kind: String,
    #[diesel(sql_type = Text)]
    pub metric: String,
    #[diesel(sql_type = Numeric)]
    pub recorded: bigdecimal::BigDecimal,
    #[diesel(sql_type = Numeric)]
    pub actual: bigdecimal::BigDecimal,
    #[diesel(sql_type = Numeric)]
    pub delta: bigdecimal::BigDecimal,
}

#[derive(QueryableByName)]
struct UnknownZone {
    #[diesel(sql_type = BigInt)]
    user_id: i64,
}

/// The job body of `reset-daily` / `reset-monthly`: a manual reset of `opts.user_id` when
/// given, else the rollover of every ended period.
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
    match opts.user_id {
        Some(user_id) => reset_user_period(conn, now, user_id, period, opts.dry_run),
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
    conn.batch_execute(
        "SET LOCAL jit = off;
         SET LOCAL work_mem = '64MB';
         DROP TABLE IF EXISTS usage_closing, usage_closing_raw;",
    )
}

/// Closes every open period of kind `period` with `period_end <= now`, reconciled against the
/// raw events, and opens the successor of each one whose user was active in it. Repeats until
/// none has ended, so after downtime every missed boundary is closed in order.
pub fn close_ended_periods(
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

/// What one batch of [`close_ended_periods`] did.
struct ClosedBatch {
    closed: usize,
    opened: usize,
    drift: Vec<Drift>,
    unknown_zones: Vec<UnknownZone>,
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
    // Each distinct zone name is checked once, not once per user (MATERIALIZED: inlined, the
    // planner moves the check onto every row of users).
    let unknown_zones: Vec<UnknownZone> = diesel::sql_query(
        "WITH zones AS MATERIALIZED (SELECT DISTINCT u.timezone FROM usage_closing c
                                       JOIN users u ON u.id = c.user_id),
              unknown AS MATERIALIZED (SELECT timezone FROM zones
                                        WHERE NOT usage_timezone_is_valid(timezone))
         SELECT DISTINCT c.user_id FROM usage_closing c JOIN users u ON u.id = c.user_id
          WHERE u.timezone IN (SELECT timezone FROM unknown)
          ORDER BY 1",
    )
    .load(conn)?;
    diesel::sql_query(RAW_SQL).execute(conn)?;
    conn.batch_execute("ANALYZE usage_closing_raw")?;
    let drift: Vec<Drift> = diesel::sql_query(DRIFT_SQL).load(conn)?;
    // Without drift the recorded totals are already the raw ones: only the status changes.
    let close = if drift.is_empty() {
        CLOSE_SQL
    } else {
        APPLY_SQL
    };
    diesel::sql_query(close)
        .bind::<Timestamptz, _>(now)
        .execute(conn)?;
    let opened = diesel::sql_query(SUCCESSORS_SQL).execute(conn)?;
    conn.batch_execute("DROP TABLE usage_closing, usage_closing_raw")?;
    Ok(Some(ClosedBatch {
        closed,
        opened,
        drift,
        unknown_zones,
    }))
}

/// The totals of a rollover run over all its batches, and what it has logged so far.
#[derive(Default)]
struct CloseTally {
    closed: usize,
    opened: usize,
    batches: usize,
    drift_values: usize,
    drift_periods: BTreeSet<(i64, DateTime<Utc>)>,
    drift_samples: Vec<Drift>,
    unknown_zones: BTreeSet<i64>,
}

impl CloseTally {
    /// Counts a batch, warning once per user with an unknown zone and for the first
    /// [`DRIFT_WARNINGS_LOGGED`] drifted values.
    fn add(&mut self, batch: ClosedBatch, period: QuotaPeriod) {
        self.batches += 1;
        self.closed += batch.closed;
        self.opened += batch.opened;
        for zone in batch.unknown_zones {
            if self.unknown_zones.insert(zone.user_id) {
                tracing::warn!(
                    user.id = zone.user_id,
                    period = period.as_str(),
                    "unknown time zone in users.timezone; periods computed in UTC (fix the user's time zone)"
                );
            }
        }
        for d in batch.drift {
            if self.drift_values < DRIFT_WARNINGS_LOGGED {
                tracing::warn!(
                    user.id = d.user_id,
                    period = period.as_str(),
                    period.start = %d.period_start,
                    event.kind = %d.kind,
                    metric = %d.metric,
                    recorded = %d.recorded,
                    actual = %d.actual,
                    delta = %d.delta,
                    "period total drifted from the raw events; repaired"
                );
            }
            self.drift_values += 1;
            self.drift_periods.insert((d.user_id, d.period_start));
            if self.drift_samples.len() < DRIFT_SAMPLES_REPORTED {
                self.drift_samples.push(d);
            }
        }
    }

    fn into_report(self, now: DateTime<Utc>, period: QuotaPeriod, dry_run: bool) -> JobReport {
        if self.drift_values > DRIFT_WARNINGS_LOGGED {
            tracing::warn!(
                period = period.as_str(),
                drift.values = self.drift_values,
                "more drifted values were repaired than logged; see the run report"
            );
        }
        let (verb, open_verb) = if dry_run {
            ("would close", "would open")
        } else {
            ("closed", "opened")
        };
        let mut summary = format!(
            "{verb} {} {} period(s) ending at or before {}, {open_verb} {} successor(s)",
            self.closed,
            period.as_str(),
            now.format("%Y-%m-%d %H:%M:%SZ"),
            self.opened
        );
        if self.drift_values > 0 {
            summary.push_str(&format!(
                "; repaired drift in {} period(s) ({} value(s))",
                self.drift_periods.len(),
                self.drift_values
            ));
        }
        if !self.unknown_zones.is_empty() {
            summary.push_str(&format!(
                "; {} user(s) with an unknown time zone treated as UTC",
                self.unknown_zones.len()
            ));
        }
        JobReport::new(
            summary,
            json!({
                "period": period.as_str(),
                "closed": self.closed,
                "opened": self.opened,
                "batches": self.batches,
                "drift": {
                    "periods": self.drift_periods.len(),
                    "values": self.drift_values,
                    "samples": self.drift_samples,
                },
                "unknown_timezone_users": self.unknown_zones,
                "dry_run": dry_run,
            }),
        )
    }
}

#[derive(QueryableByName)]
struct UserZone {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    known_zone: bool,
}

#[derive(QueryableByName, Debug)]
struct PeriodRow {
    #[diesel(sql_type = Timestamptz)]
    period_start: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    period_end: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    status: String,
}

/// Manual reset (`--run reset-daily --user 42`): closes the user's period containing `now`
/// at `now` with reason `manual` and opens a new one from `now` to the normal boundary. Both
/// get exact totals from the raw events. Alerts re-arm because the new period has a new start.
/// Running it again for the same instant changes nothing.
pub fn reset_user_period(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    user_id: i64,
    period: QuotaPeriod,
    dry_run: bool,
) -> Result<JobReport, JobError> {
    let p = period.as_str();
    conn.transaction(|conn| -> Result<JobReport, JobError> {
        lock_out_aggregation(conn)?;
        check_user(conn, user_id)?;
        let current = period_containing(conn, user_id, period, now)?;
        if current.period_start == now {
            return Ok(JobReport::new(
                format!(
                    "user {user_id}'s {p} period already starts at {}; nothing to reset",
                    now.format("%Y-%m-%d %H:%M:%SZ")
                ),
                json!({ "user_id": user_id, "period": p, "reset": false, "dry_run": dry_run }),
            ));
        }
        if current.status == "closed" {
            return Err(JobError::Invalid(format!(
                "user {user_id}'s {p} period containing {} ({} to {}) is already closed; \
                 a manual reset applies to the current period (omit --at or give a later instant)",
                now.format("%Y-%m-%d %H:%M:%SZ"),
                current.period_start.format("%Y-%m-%d %H:%M:%SZ"),
                current.period_end.format("%Y-%m-%d %H:%M:%SZ"),
            )));
        }
        split_period(conn, user_id, period, now, &current)?;
        tracing::info!(
            user.id = user_id,
            period = p,
            period.start = %current.period_start,
            period.end = %current.period_end,
            dry_run,
            "manual reset"
        );
        let verb = if dry_run { "would close" } else { "closed" };
        Ok(JobReport::new(
            format!(
                "{verb} user {user_id}'s {p} period {} at {} (manual); new period until {}",
                current.period_start.format("%Y-%m-%d %H:%M:%SZ"),
                now.format("%Y-%m-%d %H:%M:%SZ"),
                current.period_end.format("%Y-%m-%d %H:%M:%SZ"),
            ),
            json!({
                "user_id": user_id,
                "period": p,
                "reset": true,
                "closed": { "period_start": current.period_start, "period_end": now },
                "opened": { "period_start": now, "period_end": current.period_end },
                "dry_run": dry_run,
            }),
        ))
    })
}

/// Refuses a user id that is not in `users`; warns when the user's zone is unknown.
fn check_user(conn: &mut PgConnection, user_id: i64) -> Result<(), JobError> {
    let user: Option<UserZone> = diesel::sql_query(
        "SELECT usage_timezone_is_valid(timezone) AS known_zone FROM users WHERE id = $1",
    )
    .bind::<BigInt, _>(user_id)
    .get_result(conn)
    .optional()?;
    let Some(user) = user else {
        return Err(JobError::Invalid(format!(
            "user {user_id} is not in the users table; check the id given to --user"
        )));
    };
    if !user.known_zone {
        tracing::warn!(
            user.id = user_id,
            "unknown time zone in users.timezone; periods computed in UTC (fix the user's time zone)"
        );
    }
    Ok(())
}

/// The user's period containing `now`, or the one it would be (status `missing`): natural
/// bounds trimmed so it never overlaps a neighbour.
fn period_containing(
    conn: &mut PgConnection,
    user_id: i64,
    period: QuotaPeriod,
    now: DateTime<Utc>,
) -> QueryResult<PeriodRow> {
    diesel::sql_query(
        "SELECT COALESCE(cur.period_start, GREATEST(b.period_start, prev.period_end)) AS period_start,
                COALESCE(cur.period_end, LEAST(b.period_end, nxt.period_start)) AS period_end,
                COALESCE(cur.status, 'missing') AS status
           FROM users u
          CROSS JOIN LATERAL usage_period_bounds(u.timezone, u.billing_anchor_day, $2, $3) b
           LEFT JOIN usage_periods cur ON cur.user_id = u.id AND cur.period = $2
                 AND cur.period_start <= $3 AND cur.period_end > $3
           LEFT JOIN LATERAL (SELECT max(up.period_end) AS period_end FROM usage_periods up
                               WHERE up.user_id = u.id AND up.period = $2 AND up.period_end <= $3) prev ON true
           LEFT JOIN LATERAL (SELECT min(up.period_start) AS period_start FROM usage_periods up
                               WHERE up.user_id = u.id AND up.period = $2 AND up.period_start > $3) nxt ON true
          WHERE u.id = $1",
    )
    .bind::<BigInt, _>(user_id)
    .bind::<Text, _>(period.as_str())
    .bind::<Timestamptz, _>(now)
    .get_result(conn)
}

/// Ends `current` at `now` (reason `manual`) and opens its remainder as a new period, both
/// with totals reconciled against the raw events.
fn split_period(
    conn: &mut PgConnection,
    user_id: i64,
    period: QuotaPeriod,
    now: DateTime<Utc>,
    current: &PeriodRow,
) -> QueryResult<()> {
    let p = period.as_str();
    if current.status == "missing" {
        diesel::sql_query(
            "INSERT INTO usage_periods (user_id, period, period_start, period_end)
             VALUES ($1, $2, $3, $4)",
        )
        .bind::<BigInt, _>(user_id)
        .bind::<Text, _>(p)
        .bind::<Timestamptz, _>(current.period_start)
        .bind::<Timestamptz, _>(current.period_end)
        .execute(conn)?;
    }
    diesel::sql_query(
        "UPDATE usage_periods SET period_end = $3
          WHERE user_id = $1 AND period = $2 AND period_start = $4",
    )
    .bind::<BigInt, _>(user_id)
    .bind::<Text, _>(p)
    .bind::<Timestamptz, _>(now)
    .bind::<Timestamptz, _>(current.period_start)
    .execute(conn)?;
    diesel::sql_query(
        "INSERT INTO usage_periods (user_id, period, period_start, period_end)
         VALUES ($1, $2, $3, $4)",
    )
    .bind::<BigInt, _>(user_id)
    .bind::<Text, _>(p)
    .bind::<Timestamptz, _>(now)
    .bind::<Timestamptz, _>(current.period_end)
    .execute(conn)?;
    // Both halves are reconciled: events already counted in the old period that belong
    // after `now` move to the new one.
    diesel::sql_query(
        "CREATE TEMP TABLE usage_closing ON COMMIT DROP AS
         SELECT $1::bigint AS user_id, $2::text AS period, v.period_start, v.period_end, v.close_reason
           FROM (VALUES ($4::timestamptz, $3::timestamptz, 'manual'::text),
                        ($3::timestamptz, $5::timestamptz, NULL::text))
                AS v (period_start, period_end, close_reason)",
    )
    .bind::<BigInt, _>(user_id)
    .bind::<Text, _>(p)
    .bind::<Timestamptz, _>(now)
    .bind::<Timestamptz, _>(current.period_start)
    .bind::<Timestamptz, _>(current.period_end)
    .execute(conn)?;
    diesel::sql_query(RAW_SQL).execute(conn)?;
    diesel::sql_query(APPLY_SQL)
        .bind::<Timestamptz, _>(now)
        .execute(conn)?;
    conn.batch_execute("DROP TABLE usage_closing, usage_closing_raw")
}
