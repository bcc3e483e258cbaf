//! `aggregate`: adds new usage events into the daily token summary (`token_usage_daily`) and
//! the quota periods, exactly once, and — given `--from`/`--to` — rebuilds days of that
//! summary from raw events. An event spent in an organization (`org_id`) counts on the
//! organization's local day and in its periods; a personal one on the user's.
//!
//! Exactly-once rests on the watermark W (`aggregation_watermark.xid`): every event whose
//! inserting transaction id is below W has been added, none at or above it. A transaction
//! locks the watermark row, takes X = the xmin of a fresh snapshot (every transaction below X
//! has finished, so no event below X can still appear), adds the events with
//! W <= recorded_xid < U for some U <= X, and stores U. The sums and the new watermark commit
//! together or not at all. A backlog is split into transactions of about
//! `aggregate.batch_events` events by choosing U along the recorded_xid index. Events that
//! cannot be counted are set aside in the same transaction (see `quarantine`), so the
//! watermark always passes them.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Nullable, Text};
use serde_json::json;

use super::quarantine::{self, SetAside, Tally};
use super::watermark::{self, parse_xid, snapshot_xmin};
use super::{Ctx, JobError, JobReport, RunOpts};

const CUT_SQL: &str = include_str!("sql/aggregate_cut.sql");
const BATCH_SQL: &str = include_str!("sql/aggregate_batch.sql");
const SUBJECTS_SQL: &str = include_str!("sql/aggregate_subjects.sql");
const DAILY_SQL: &str = include_str!("sql/aggregate_daily.sql");
const DAILY_INCREASE_SQL: &str = include_str!("sql/aggregate_daily_increase.sql");
const DAILY_RESTORE_SQL: &str = include_str!("sql/aggregate_daily_restore.sql");

/// How many unknown-zone user ids and differing rows a report lists (the counts are complete).
const REPORT_LIST_LIMIT: usize = 100;

pub mod grants;
pub mod held_back;
mod period_step;
mod rebuild;

pub fn run(
    ctx: &Ctx,
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    opts: &RunOpts,
) -> Result<JobReport, JobError> {
    match (opts.from, opts.to) {
        (None, None) if opts.user_id.is_some() => Err(JobError::Invalid(
            "aggregate: --user limits a rebuild; give --from and --to as well \
             (the incremental run always covers every user)"
                .into(),
        )),
        (None, None) => aggregate_new_events(ctx, conn, opts),
        (Some(from), Some(to)) => rebuild::rebuild(ctx, conn, now, from, to, opts),
        _ => Err(JobError::Invalid(
            "aggregate: a rebuild needs both --from and --to (YYYY-MM-DD, inclusive)".into(),
        )),
    }
}

#[derive(QueryableByName)]
struct Cut {
    #[diesel(sql_type = Nullable<Text>)]
    first: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    cut: Option<String>,
}

/// A subject of the batch counted in UTC: a user (org_id 0) or an organization (user_id 0).
#[derive(QueryableByName, Debug)]
struct ZoneProblem {
    #[diesel(sql_type = BigInt)]
    user_id: i64,
    #[diesel(sql_type = BigInt)]
    org_id: i64,
    #[diesel(sql_type = Nullable<Text>)]
    declared_timezone: Option<String>,
    #[diesel(sql_type = Bool)]
    missing: bool,
}

/// Which events one aggregate transaction may add: those with `recorded_xid` below the
/// limit, and never beyond what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Below the xmin of the transaction's snapshot (every transaction below it has ended, so
    /// no event below it can still appear), and below `also_below` when given: the job, whose
    /// run stops at its first transaction's horizon.
    Horizon { also_below: Option<u64> },
    /// Below this transaction id, whatever is still open in the cluster. Only where no
    /// transaction that could still insert events into this database is open: a test or a
    /// benchmark on a database of its own, which other databases' open transactions must not
    /// hold back.
    Below(u64),
}

/// What one committed aggregate transaction did.
#[derive(Debug, Default)]
pub struct Step {
    /// The watermark before and after.
    pub from: u64,
    pub to: u64,
    /// Events added (those set aside are not).
    pub events: u64,
    pub rows_written: u64,
    pub periods_opened: u64,
    /// Time spent adding the batch into the quota periods (the period step).
    pub period_step: std::time::Duration,
    zone_problems: Vec<ZoneProblem>,
    set_aside: Vec<SetAside>,
    /// What settling the grants' drawdown did.
    pub grants: grants::Settled,
    /// The watermark reached the limit: nothing older is left.
    pub caught_up: bool,
}

/// The aggregate transaction: the events of [W, U) into the daily summary and the quota
/// periods, the watermark to U, all or nothing. U is at most `limit` and leaves about
/// `batch_events` events in the batch (never splitting one inserting transaction). Returns
/// what it did and the snapshot's horizon. The job, the tests and the benchmarks all add
/// events through it.
pub fn transaction(
    conn: &mut PgConnection,
    batch_events: i64,
    limit: Limit,
) -> Result<(Step, u64), JobError> {
    conn.transaction(|conn| {
        let from = watermark::lock(conn)?.xid;
        let horizon = snapshot_xmin(conn)?;
        let limit = match limit {
            Limit::Horizon { also_below } => also_below.map_or(horizon, |t| t.min(horizon)),
            Limit::Below(xid) => xid,
        };
        let mut step = Step {
            from,
            to: from,
            caught_up: true,
            ..Step::default()
        };
        if limit <= from {
            step.grants = grants::settle(conn)?;
            return Ok((step, horizon));
        }
        let cut: Cut = diesel::sql_query(CUT_SQL)
            .bind::<Text, _>(from.to_string())
            .bind::<Text, _>(limit.to_string())
            .bind::<BigInt, _>(batch_events)
            .get_result(conn)?;
        let to = match (&cut.first, &cut.cut) {
            (_, None) => limit,
            // One transaction inserted more than a batch: its events go together.
            (Some(first), Some(c)) if first == c => parse_xid(c)? + 1,
            (_, Some(c)) => parse_xid(c)?,
        };
        if cut.first.is_some() {
            // A batch's grouping and sorting fit in memory instead of spilling to disk. The
            // temporary tables are analyzed for their sizes and keys: a small sample will do.
            conn.batch_execute("SET LOCAL work_mem = '256MB'")?;
            conn.batch_execute("SET LOCAL default_statistics_target = 10")?;
            conn.batch_execute(
                "DROP TABLE IF EXISTS pg_temp.aggregate_batch, pg_temp.aggregate_subjects",
            )?;
            let events = diesel::sql_query(BATCH_SQL)
                .bind::<Text, _>(from.to_string())
                .bind::<Text, _>(to.to_string())
                .execute(conn)?;
            step.events = events as u64;
            add_batch(conn, &mut step)?;
        }
        watermark::store(conn, to)?;
        step.grants = grants::settle(conn)?;
        step.to = to;
        step.caught_up = to == limit;
        Ok((step, horizon))
    })
}

/// Everything the batch (`aggregate_batch`) feeds, in the aggregate transaction: statements
/// that add the batch into other books belong here, so they commit with the summary and the
/// watermark. Runs only for a non-empty batch. Records in `step` the summary rows written,
/// the users and organizations whose zone could not be used and the events set aside.
fn add_batch(conn: &mut PgConnection, step: &mut Step) -> Result<(), JobError> {
    // Statistics of the batch and its subjects, so that the statements below join and group
    // them in memory (hash joins on the subject, not sorts of the whole batch).
    conn.batch_execute("ANALYZE aggregate_batch")?;
    diesel::sql_query(SUBJECTS_SQL).execute(conn)?;
    conn.batch_execute("ANALYZE aggregate_subjects")?;
    step.zone_problems = diesel::sql_query(
        "SELECT user_id, org_id, declared_timezone, missing FROM aggregate_subjects
          WHERE unknown OR missing ORDER BY org_id, user_id",
    )
    .load(conn)?;
    step.set_aside = quarantine::set_aside_uncountable(conn)?;
    step.events -= step.set_aside.len() as u64;
    step.rows_written = add_groups_to_daily(conn)?;
    let started = std::time::Instant::now();
    step.periods_opened = period_step::add_batch_to_periods(conn)?;
    step.period_step = started.elapsed();
    grants::add_batch(conn)?;
    Ok(())
}

/// Adds `aggregate_groups` into `token_usage_daily`: new rows inserted, the rows listed in
/// `aggregate_daily_existing` increased, and any of those deleted meanwhile written again.
/// Returns the summary rows written.
fn add_groups_to_daily(conn: &mut PgConnection) -> Result<u64, JobError> {
    #[derive(QueryableByName)]
    struct Listed {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let inserted = diesel::sql_query(DAILY_SQL).execute(conn)?;
    let increased = diesel::sql_query(DAILY_INCREASE_SQL).execute(conn)?;
    let listed = diesel::sql_query("SELECT count(*) AS n FROM aggregate_daily_existing")
        .get_result::<Listed>(conn)?
        .n;
    let mut restored = 0;
    if (increased as i64) < listed {
        restored = diesel::sql_query(DAILY_RESTORE_SQL).execute(conn)?;
        tracing::warn!(
            job.name = "aggregate",
            rows.count = restored,
            "summary rows deleted while this transaction added to them were written again"
        );
    }
    Ok((inserted + increased + restored) as u64)
}

/// What the transactions of one incremental run did, for its report.
#[derive(Default)]
struct RunTally {
    events: u64,
    rows_written: u64,
    transactions: u64,
    /// Passes after the first, each to a new horizon (see [`aggregate_new_events`]).
    passes: u64,
    unknown_zone_users: BTreeSet<i64>,
    missing_users: BTreeSet<i64>,
    unknown_zone_orgs: BTreeSet<i64>,
    missing_orgs: BTreeSet<i64>,
    quarantined: Tally,
    grants: grants::Settled,
}

impl RunTally {
    /// Counts one committed step; warns once per user or organization with an unknown zone.
    fn add(&mut self, step: Step) {
        self.transactions += 1;
        self.events += step.events;
        self.rows_written += step.rows_written;
        self.grants.subjects += step.grants.subjects;
        self.grants.changed += step.grants.changed;
        self.quarantined.add("aggregate", step.set_aside);
        for problem in step.zone_problems {
            if problem.org_id > 0 {
                self.add_org_problem(problem);
            } else if problem.missing {
                self.missing_users.insert(problem.user_id);
            } else if self.unknown_zone_users.insert(problem.user_id) {
                tracing::warn!(
                    job.name = "aggregate",
                    user.id = problem.user_id,
                    user.timezone = problem.declared_timezone.as_deref().unwrap_or(""),
                    "unknown time zone; this user's events are summarised by UTC day \
                     (fix users.timezone, then rebuild the affected days)"
                );
            }
        }
    }

    fn add_org_problem(&mut self, problem: ZoneProblem) {
        if problem.missing {
            self.missing_orgs.insert(problem.org_id);
        } else if self.unknown_zone_orgs.insert(problem.org_id) {
            tracing::warn!(
                job.name = "aggregate",
                org.id = problem.org_id,
                org.timezone = problem.declared_timezone.as_deref().unwrap_or(""),
                "unknown time zone; this organization's events are summarised by UTC day \
                 (fix organizations.timezone, then rebuild the affected days)"
            );
        }
    }

    fn into_report(self, from: u64, to: u64) -> JobReport {
        if !self.missing_users.is_empty() {
            tracing::warn!(
                job.name = "aggregate",
                users.count = self.missing_users.len(),
                users.first = ?self.missing_users.iter().take(10).collect::<Vec<_>>(),
                "events of user ids without a users row; summarised by UTC day"
            );
        }
        if !self.missing_orgs.is_empty() {
            tracing::warn!(
                job.name = "aggregate",
                orgs.count = self.missing_orgs.len(),
                orgs.first = ?self.missing_orgs.iter().take(10).collect::<Vec<_>>(),
                "events of organization ids without an organizations row; summarised by UTC \
                 day (add the organizations row, then rebuild the affected days)"
            );
        }
        let mut summary = format!(
            "{} event(s) added into {} summary row(s) in {} transaction(s); watermark {from} -> {to}",
            self.events, self.rows_written, self.transactions
        );
        if self.passes > 0 {
            summary += &format!(
                " in {} passes, following events committed while it ran",
                self.passes + 1
            );
        }
        if !self.unknown_zone_users.is_empty() {
            summary += &format!(
                "; {} user(s) with an unknown time zone counted in UTC",
                self.unknown_zone_users.len()
            );
        }
        if !self.unknown_zone_orgs.is_empty() {
            summary += &format!(
                "; {} organization(s) with an unknown time zone counted in UTC",
                self.unknown_zone_orgs.len()
            );
        }
        if self.grants.subjects > 0 {
            summary += &format!(
                "; the grants of {} subject(s) settled ({} draw row(s) changed)",
                self.grants.subjects, self.grants.changed
            );
        }
        if self.quarantined.count() > 0 {
            summary += &format!(
                "; {} event(s) that cannot be counted set aside into usage_quarantine",
                self.quarantined.count()
            );
        }
        JobReport::new(
            summary,
            json!({
                "events": self.events,
                "rows_written": self.rows_written,
                "transactions": self.transactions,
                "passes": self.passes + 1,
                "watermark_from": from.to_string(),
                "watermark_to": to.to_string(),
                "unknown_timezone_users": self.unknown_zone_users.len(),
                "unknown_timezone_user_ids": self.unknown_zone_users.iter().take(REPORT_LIST_LIMIT).collect::<Vec<_>>(),
                "users_without_row": self.missing_users.len(),
                "unknown_timezone_orgs": self.unknown_zone_orgs.len(),
                "unknown_timezone_org_ids": self.unknown_zone_orgs.iter().take(REPORT_LIST_LIMIT).collect::<Vec<_>>(),
                "orgs_without_row": self.missing_orgs.len(),
                "org_ids_without_row": self.missing_orgs.iter().take(REPORT_LIST_LIMIT).collect::<Vec<_>>(),
                "quarantined": self.quarantined.to_json(),
                "grant_subjects_settled": self.grants.subjects,
                "grant_draws_changed": self.grants.changed,
            }),
        )
    }
}

/// A run that has added at least this many events since it took its horizon goes on with the
/// events committed meanwhile (see [`aggregate_new_events`]).
const FOLLOW_MIN_EVENTS: u64 = 10_000;
/// How long a run goes on following the writers before it ends, leaving the rest to the next
/// tick of the schedule: its report and run record come at least this often.
const FOLLOW_FOR: Duration = Duration::from_secs(60);

/// Adds every event below the horizon of the run's first transaction, a batch per
/// transaction: one pass. While the last pass added at least [`FOLLOW_MIN_EVENTS`] events and
/// the run is younger than [`FOLLOW_FOR`], it takes a new horizon and adds what was committed
/// meanwhile, so under heavy writing the oldest waiting event is about two passes old rather
/// than a tick of the schedule plus a pass. A pass that finds little (light writing, or the
/// horizon held back by an open transaction) ends the run.
fn aggregate_new_events(
    ctx: &Ctx,
    conn: &mut PgConnection,
    opts: &RunOpts,
) -> Result<JobReport, JobError> {
    if opts.dry_run {
        return pending_events(conn);
    }
    let batch_events = ctx.settings.aggregate.batch_events;
    let started = Instant::now();
    let mut tally = RunTally::default();
    let mut first_watermark = None;
    let mut target = None;
    let mut pass_events = 0;
    let last_watermark = loop {
        opts.cancel.check()?;
        let (step, horizon) =
            transaction(conn, batch_events, Limit::Horizon { also_below: target })?;
        // A pass stops at the horizon of its first transaction, so it ends under any load.
        target.get_or_insert(horizon);
        first_watermark.get_or_insert(step.from);
        let (to, caught_up) = (step.to, step.caught_up);
        pass_events += step.events;
        tally.add(step);
        if caught_up {
            if pass_events < FOLLOW_MIN_EVENTS || started.elapsed() >= FOLLOW_FOR {
                break to;
            }
            tally.passes += 1;
            (target, pass_events) = (None, 0);
            continue;
        }
        tracing::info!(
            job.name = "aggregate",
            events.done = tally.events,
            transactions = tally.transactions,
            watermark = to,
            watermark.target = target.unwrap_or(to),
            "aggregate backlog: batch committed"
        );
    };
    let mut report = tally.into_report(first_watermark.unwrap_or(last_watermark), last_watermark);
    if let Some(holder) = held_back::holder(conn)?.filter(held_back::Holder::worth_reporting) {
        report_held_back(ctx, &mut report, &holder);
    }
    Ok(report)
}

/// Names the transaction holding the watermark back in the run's report and its log: a
/// warning once it has been open `aggregate.stall_warning`.
fn report_held_back(ctx: &Ctx, report: &mut JobReport, holder: &held_back::Holder) {
    let described = holder.describe();
    let stalled = holder
        .open_seconds
        .is_some_and(|s| s >= ctx.settings.aggregate.stall_warning.0.as_secs_f64());
    let message = "the aggregation watermark is held back by a transaction left open: events \
                   committed after it began wait for it to end (quota answers stay exact); \
                   end it, or set idle_in_transaction_session_timeout for the application's \
                   role (docs/OPERATIONS.md)";
    if stalled {
        tracing::warn!(job.name = "aggregate", held_back_by = %described, "{message}");
    } else {
        tracing::info!(job.name = "aggregate", held_back_by = %described, "{message}");
    }
    report.summary += &format!("; watermark held back by {described}");
    report.details["held_back_by"] = serde_json::to_value(holder).unwrap_or_default();
}

/// The dry run of the incremental path: how many events the next run would add.
fn pending_events(conn: &mut PgConnection) -> Result<JobReport, JobError> {
    let from = watermark::lock(conn)?.xid;
    let horizon = snapshot_xmin(conn)?;
    let pending: crate::db::Count = diesel::sql_query(
        "SELECT count(*) AS n FROM usage_events
          WHERE recorded_xid >= $1::xid8 AND recorded_xid < $2::xid8",
    )
    .bind::<Text, _>(from.to_string())
    .bind::<Text, _>(horizon.max(from).to_string())
    .get_result(conn)?;
    Ok(JobReport::new(
        format!("would add {} event(s); watermark {from}", pending.n),
        json!({
            "events": pending.n,
            "watermark_from": from.to_string(),
            "watermark_to": horizon.max(from).to_string(),
            "dry_run": true,
        }),
    ))
}
