//! `aggregate --from D1 --to D2`: rebuilds local days of the daily token summary from the raw
//! events below the watermark, replacing (not adding) the rows that differ.
//!
//! Summary rows outlive their raw events (`retention.token_usage_daily_months` against
//! `retention.events_months`), and recounting what retention left of a day would replace a
//! good row by a smaller one. So a rebuild leaves alone every local day that began before
//! the instant from which `usage_events` holds every event (`retention::events_horizon`):
//! days gone in every zone are skipped, the days around that instant are checked user by
//! user in the zone of each row (the organization's for a member's rows in one, the user's
//! otherwise), and both are reported.
//!
//! `--user N` rebuilds N's rows, personal and in every organization.

use std::io::{IsTerminal, Write};

use chrono::{DateTime, Days, NaiveDate, NaiveTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Date, Nullable, Text, Timestamptz};
use serde::Serialize;
use serde_json::{Value, json};

use super::REPORT_LIST_LIMIT;
use crate::jobs::retention::{self, EventsHorizon};
use crate::jobs::watermark;
use crate::jobs::{Ctx, JobError, JobReport, RunOpts};

const REBUILD_PARTIAL_SQL: &str = include_str!("../sql/rebuild_partial.sql");
const REBUILD_FRESH_SQL: &str = include_str!("../sql/rebuild_fresh.sql");
const REBUILD_DIFF_SQL: &str = include_str!("../sql/rebuild_diff.sql");
const REBUILD_APPLY_SQL: &str = include_str!("../sql/rebuild_apply.sql");

/// The longest range one rebuild accepts.
const MAX_REBUILD_DAYS: u64 = 3700;

/// A summary row that differs from what the raw events say.
#[derive(QueryableByName, Serialize)]
struct Difference {
    #[diesel(sql_type = BigInt)]
    user_id: i64,
    /// The organization of a member's row; `None` for a personal row.
    #[diesel(sql_type = Nullable<BigInt>)]
    org_id: Option<i64>,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Text)]
    request_type: String,
    #[diesel(sql_type = Text)]
    model: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    summary_events: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    raw_events: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    summary_tokens: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    raw_tokens: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    summary_cost: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    raw_cost: Option<String>,
}

/// Progress of a rebuild: a bar on a terminal, log lines otherwise.
struct RebuildProgress {
    total: u64,
    done: u64,
    terminal: bool,
}

impl RebuildProgress {
    fn new(total: u64) -> Self {
        RebuildProgress {
            total,
            done: 0,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    fn day_done(&mut self, day: NaiveDate, differing: usize) {
        self.done += 1;
        if self.terminal {
            let width = 30u64;
            let filled = (self.done * width / self.total.max(1)) as usize;
            let mut err = std::io::stderr();
            let _ = write!(
                err,
                "\rrebuild [{}{}] {}/{} days, {day}: {differing} row(s) differ ",
                "#".repeat(filled),
                " ".repeat(width as usize - filled),
                self.done,
                self.total
            );
            if self.done == self.total {
                let _ = writeln!(err);
            }
        } else {
            tracing::info!(
                job.name = "aggregate",
                rebuild.day = %day,
                rebuild.done = self.done,
                rebuild.total = self.total,
                rows.differing = differing,
                "rebuild: day done"
            );
        }
    }
}

/// Which local days still have every raw event, when `usage_events` holds every event from
/// `kept_from` on. A local day begins within a day of its UTC midnight in any zone (the
/// bound `rebuild_fresh.sql` reads events with), hence two dates.
struct RetainedDays {
    /// Days before this one lost events in every zone.
    partly: NaiveDate,
    /// Days from this one on are whole in every zone; the days between are checked per user.
    whole: NaiveDate,
}

impl RetainedDays {
    fn new(kept_from: DateTime<Utc>) -> RetainedDays {
        let date = kept_from.date_naive();
        let first_midnight = if kept_from.time() == NaiveTime::MIN {
            date
        } else {
            date.succ_opt().unwrap_or(date)
        };
        RetainedDays {
            partly: first_midnight.pred_opt().unwrap_or(NaiveDate::MIN),
            whole: first_midnight.succ_opt().unwrap_or(NaiveDate::MAX),
        }
    }
}

/// What a rebuild left alone because retention deleted its raw events.
struct Skipped {
    horizon: EventsHorizon,
    /// The first and last day of the range lost in every zone.
    days: Option<(NaiveDate, NaiveDate)>,
    /// Days on which some users' local day began before the horizon, with those users.
    partial: Vec<(NaiveDate, Vec<i64>)>,
}

impl Skipped {
    fn day_count(&self) -> i64 {
        self.days
            .map_or(0, |(first, last)| (last - first).num_days() + 1)
    }

    /// The report's sentence about what was skipped; `None` when nothing was.
    fn summary(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some((first, last)) = self.days {
            parts.push(format!("{first}..{last} ({} day(s))", self.day_count()));
        }
        let user_days: usize = self.partial.iter().map(|(_, users)| users.len()).sum();
        if let (Some((first, _)), Some((last, _))) = (self.partial.first(), self.partial.last()) {
            parts.push(format!("{user_days} user-day(s) on {first}..{last}"));
        }
        (!parts.is_empty()).then(|| {
            format!(
                "skipped {} whose raw events retention deleted (events are kept from {} on: {}); \
                 their summary rows were left as they were",
                parts.join(" and "),
                self.horizon.kept_from.format("%Y-%m-%d %H:%M:%SZ"),
                self.horizon.reason
            )
        })
    }

    /// One line per partly skipped day, for the printed result table.
    fn lines(&self) -> Vec<String> {
        self.partial
            .iter()
            .map(|(day, users)| {
                format!(
                    "{day}: left {} user(s) as they were, their local day began before {} ({:?})",
                    users.len(),
                    self.horizon.kept_from.format("%Y-%m-%d %H:%M:%SZ"),
                    users.iter().take(10).collect::<Vec<_>>()
                )
            })
            .collect()
    }

    fn to_json(&self) -> Value {
        if self.days.is_none() && self.partial.is_empty() {
            return Value::Null;
        }
        json!({
            "from": self.days.map(|(first, _)| first),
            "to": self.days.map(|(_, last)| last),
            "days": self.day_count(),
            "events_kept_from": self.horizon.kept_from,
            "reason": self.horizon.reason,
            "partial_days": self.partial.iter().map(|(day, users)| json!({
                "day": day,
                "users": users.len(),
                "user_ids": users.iter().take(REPORT_LIST_LIMIT).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// What the days of one rebuild found and changed.
#[derive(Default)]
struct RebuildTally {
    differing_rows: usize,
    /// The first differing rows, with their day.
    differences: Vec<(NaiveDate, Difference)>,
    watermark: u64,
}

fn check_range(from: NaiveDate, to: NaiveDate) -> Result<u64, JobError> {
    if from > to {
        return Err(JobError::Invalid(format!(
            "aggregate: --from {from} is after --to {to}; give the first and the last day of the range"
        )));
    }
    let total = (to - from).num_days() as u64 + 1;
    if total > MAX_REBUILD_DAYS {
        return Err(JobError::Invalid(format!(
            "aggregate: a rebuild of {total} days is more than {MAX_REBUILD_DAYS}; split the range"
        )));
    }
    Ok(total)
}

/// Recomputes the local days `from..=to` (of one user or all) from raw events below the
/// watermark and replaces the summary rows that differ, but for days retention deleted raw
/// events of. One transaction per day, each holding the watermark lock, so the incremental
/// path neither misses nor repeats an event.
pub(super) fn rebuild(
    ctx: &Ctx,
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    from: NaiveDate,
    to: NaiveDate,
    opts: &RunOpts,
) -> Result<JobReport, JobError> {
    check_range(from, to)?;
    let horizon = retention::events_horizon(conn, &ctx.settings.retention, now)?;
    let retained = RetainedDays::new(horizon.kept_from);
    if to < retained.partly {
        return Err(JobError::Invalid(format!(
            "aggregate: the raw events of {from}..{to} are gone: events are kept from {} on ({}); \
             rebuilding these days would replace good summary rows with smaller ones, so nothing \
             was changed. Days from {} on can be rebuilt ({} user by user)",
            horizon.kept_from.format("%Y-%m-%d %H:%M:%SZ"),
            horizon.reason,
            retained.whole,
            retained.partly
        )));
    }
    let first = from.max(retained.partly);
    let mut skipped = Skipped {
        days: first
            .pred_opt()
            .filter(|_| from < first)
            .map(|last| (from, last)),
        partial: Vec::new(),
        horizon,
    };
    let mut progress = RebuildProgress::new((to - first).num_days() as u64 + 1);
    let mut tally = RebuildTally::default();
    let mut day = first;
    while day <= to {
        opts.cancel.check()?;
        let kept_from = (day < retained.whole).then_some(skipped.horizon.kept_from);
        let outcome = conn.transaction(|conn| rebuild_day(conn, day, opts, kept_from))?;
        tally.watermark = outcome.watermark;
        progress.day_done(day, outcome.differences.len());
        tally.differing_rows += outcome.differences.len();
        let room = REPORT_LIST_LIMIT.saturating_sub(tally.differences.len());
        let listed = outcome.differences.into_iter().take(room);
        tally.differences.extend(listed.map(|d| (day, d)));
        if !outcome.partial_users.is_empty() {
            skipped.partial.push((day, outcome.partial_users));
        }
        day = match day.checked_add_days(Days::new(1)) {
            Some(next) => next,
            None => break,
        };
    }
    if !opts.dry_run {
        // What grants gave follows the rebuilt totals.
        conn.transaction(|conn| -> Result<(), JobError> {
            watermark::lock(conn)?;
            diesel::sql_query(
                "UPDATE usage_grants SET settled = false
                  WHERE settled AND ($1::bigint IS NULL OR (user_id = $1 AND org_id = 0))",
            )
            .bind::<Nullable<BigInt>, _>(opts.user_id)
            .execute(conn)?;
            super::grants::settle(conn)?;
            Ok(())
        })?;
    }
    Ok(rebuild_report(from, to, opts, tally, &skipped))
}

fn rebuild_report(
    from: NaiveDate,
    to: NaiveDate,
    opts: &RunOpts,
    tally: RebuildTally,
    skipped: &Skipped,
) -> JobReport {
    let scope = opts
        .user_id
        .map_or("every user".to_string(), |u| format!("user {u}"));
    let verb = if opts.dry_run {
        "would replace"
    } else {
        "replaced"
    };
    let mut summary = format!(
        "rebuild {from}..{to} for {scope}: {verb} {} differing summary row(s) from events below \
         watermark {}",
        tally.differing_rows, tally.watermark
    );
    let mut lines = Vec::new();
    if let Some(sentence) = skipped.summary() {
        summary += &format!("; {sentence}");
        lines.push(sentence);
        lines.extend(skipped.lines());
    }
    JobReport::new(
        summary,
        json!({
            "rebuild": { "from": from, "to": to, "user_id": opts.user_id },
            "days": (to - from).num_days() + 1,
            "rows_differing": tally.differing_rows,
            "differences": tally.differences.iter().map(|(day, d)| {
                let mut row = serde_json::to_value(d).unwrap_or_default();
                row["day"] = json!(day);
                row
            }).collect::<Vec<_>>(),
            "watermark": tally.watermark.to_string(),
            "skipped": skipped.to_json(),
            "lines": lines,
            "dry_run": opts.dry_run,
        }),
    )
}

#[derive(QueryableByName)]
struct PartialUser {
    #[diesel(sql_type = BigInt)]
    user_id: i64,
}

/// What the rebuild of one day found.
struct DayOutcome {
    differences: Vec<Difference>,
    /// Users with rows whose local day (theirs, or their organization's) began before the
    /// events horizon: those rows were left as they were.
    partial_users: Vec<i64>,
    watermark: u64,
}

/// Rebuilds one day; `kept_from` (for days around the events horizon) leaves out the users
/// whose local day began before it.
fn rebuild_day(
    conn: &mut PgConnection,
    day: NaiveDate,
    opts: &RunOpts,
    kept_from: Option<DateTime<Utc>>,
) -> Result<DayOutcome, JobError> {
    let watermark = watermark::lock(conn)?.xid;
    conn.batch_execute("DROP TABLE IF EXISTS pg_temp.rebuild_fresh, pg_temp.rebuild_partial")?;
    diesel::sql_query(REBUILD_PARTIAL_SQL)
        .bind::<Date, _>(day)
        .bind::<Nullable<BigInt>, _>(opts.user_id)
        .bind::<Nullable<Timestamptz>, _>(kept_from)
        .execute(conn)?;
    let partial: Vec<PartialUser> =
        diesel::sql_query("SELECT DISTINCT user_id FROM rebuild_partial ORDER BY user_id")
            .load(conn)?;
    diesel::sql_query(REBUILD_FRESH_SQL)
        .bind::<Date, _>(day)
        .bind::<Nullable<BigInt>, _>(opts.user_id)
        .bind::<Text, _>(watermark.to_string())
        .execute(conn)?;
    let differences: Vec<Difference> = diesel::sql_query(REBUILD_DIFF_SQL)
        .bind::<Date, _>(day)
        .bind::<Nullable<BigInt>, _>(opts.user_id)
        .load(conn)?;
    if !opts.dry_run && !differences.is_empty() {
        diesel::sql_query(REBUILD_APPLY_SQL)
            .bind::<Date, _>(day)
            .bind::<Nullable<BigInt>, _>(opts.user_id)
            .execute(conn)?;
    }
    Ok(DayOutcome {
        differences,
        partial_users: partial.into_iter().map(|p| p.user_id).collect(),
        watermark,
    })
}
