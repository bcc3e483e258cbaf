//! Manual resets (`--run reset-daily --user 42`, `--run reset-monthly --org 7`): the current
//! period of one user or organization ends at the given instant and a new one starts there.

use chrono::{DateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Integer, Nullable, Text, Timestamptz};
use serde_json::json;

use super::tally::warn_unknown_zone;
use super::{GRANT_UNSETTLE_SQL, QuotaPeriod, apply, lock_out_aggregation, snapshot_and_count};
use crate::jobs::{JobError, JobReport};
use crate::subject::Subject;

const SUBJECT_SQL: &str = include_str!("../sql/manual_subject.sql");
const PERIOD_CONTAINING_SQL: &str = include_str!("../sql/manual_period_containing.sql");
const OPEN_SQL: &str = include_str!("../sql/manual_open.sql");
const END_SQL: &str = include_str!("../sql/manual_end.sql");
const CLOSING_SQL: &str = include_str!("../sql/manual_closing.sql");

/// The zone, billing anchor and plan of a user or organization.
#[derive(QueryableByName)]
struct Settings {
    #[diesel(sql_type = Text)]
    timezone: String,
    #[diesel(sql_type = Nullable<Integer>)]
    anchor: Option<i32>,
    #[diesel(sql_type = Nullable<BigInt>)]
    plan_id: Option<i64>,
    #[diesel(sql_type = Bool)]
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

/// Closes the subject's period containing `now` at `now` with reason `manual` and opens a
/// new one from `now` to the normal boundary. Both get exact totals from the raw events.
/// Alerts re-arm because the new period has a new start. Running it again for the same
/// instant changes nothing.
pub(super) fn reset_period(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    subject: Subject,
    period: QuotaPeriod,
    dry_run: bool,
) -> Result<JobReport, JobError> {
    let p = period.as_str();
    let (id_key, id) = subject.report_key();
    conn.transaction(|conn| -> Result<JobReport, JobError> {
        lock_out_aggregation(conn)?;
        let settings = subject_settings(conn, subject)?;
        let current = period_containing(conn, subject, &settings, period, now)?;
        if current.period_start == now {
            return Ok(JobReport::new(
                format!(
                    "{subject}'s {p} period already starts at {}; nothing to reset",
                    now.format("%Y-%m-%d %H:%M:%SZ")
                ),
                json!({ id_key: id, "period": p, "reset": false, "dry_run": dry_run }),
            ));
        }
        if current.status == "closed" {
            return Err(JobError::Invalid(format!(
                "{subject}'s {p} period containing {} ({} to {}) is already closed; \
                 a manual reset applies to the current period (omit --at or give a later instant)",
                now.format("%Y-%m-%d %H:%M:%SZ"),
                current.period_start.format("%Y-%m-%d %H:%M:%SZ"),
                current.period_end.format("%Y-%m-%d %H:%M:%SZ"),
            )));
        }
        split_period(conn, subject, &settings, period, now, &current)?;
        tracing::info!(
            user.id = subject.user_id(),
            org.id = subject.org_id(),
            period = p,
            period.start = %current.period_start,
            period.end = %current.period_end,
            dry_run,
            "manual reset"
        );
        Ok(split_report(subject, period, now, &current, dry_run))
    })
}

/// The report of a manual reset that split `current` at `now`.
fn split_report(
    subject: Subject,
    period: QuotaPeriod,
    now: DateTime<Utc>,
    current: &PeriodRow,
    dry_run: bool,
) -> JobReport {
    let p = period.as_str();
    let (id_key, id) = subject.report_key();
    let verb = if dry_run { "would close" } else { "closed" };
    let time = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%SZ").to_string();
    // A dry run lists the two periods it would leave, one line each.
    let lines = if dry_run {
        vec![
            format!(
                "{subject} {p} {} to {}: would close (manual)",
                time(current.period_start),
                time(now)
            ),
            format!(
                "{subject} {p} {} to {}: would open",
                time(now),
                time(current.period_end)
            ),
        ]
    } else {
        Vec::new()
    };
    JobReport::new(
        format!(
            "{verb} {subject}'s {p} period {} at {} (manual); new period until {}",
            time(current.period_start),
            time(now),
            time(current.period_end),
        ),
        json!({
            id_key: id,
            "period": p,
            "reset": true,
            "closed": { "period_start": current.period_start, "period_end": now },
            "opened": { "period_start": now, "period_end": current.period_end },
            "lines": lines,
            "dry_run": dry_run,
        }),
    )
}

/// The subject's zone, anchor and plan; refuses an id that is not in `users` or
/// `organizations`, and warns when the zone is unknown.
fn subject_settings(conn: &mut PgConnection, subject: Subject) -> Result<Settings, JobError> {
    let (user_id, org_id) = subject.key();
    let settings: Option<Settings> = diesel::sql_query(SUBJECT_SQL)
        .bind::<BigInt, _>(user_id)
        .bind::<BigInt, _>(org_id)
        .get_result(conn)
        .optional()?;
    let settings = settings.ok_or_else(|| JobError::Invalid(subject.not_found("--user")))?;
    if !settings.known_zone {
        warn_unknown_zone(subject, None);
    }
    Ok(settings)
}

/// The subject's period containing `now`, or the one it would be (status `missing`): natural
/// bounds trimmed so it never overlaps a neighbour.
fn period_containing(
    conn: &mut PgConnection,
    subject: Subject,
    settings: &Settings,
    period: QuotaPeriod,
    now: DateTime<Utc>,
) -> QueryResult<PeriodRow> {
    let (user_id, org_id) = subject.key();
    diesel::sql_query(PERIOD_CONTAINING_SQL)
        .bind::<BigInt, _>(user_id)
        .bind::<Text, _>(period.as_str())
        .bind::<Timestamptz, _>(now)
        .bind::<Text, _>(&settings.timezone)
        .bind::<Nullable<Integer>, _>(settings.anchor)
        .bind::<BigInt, _>(org_id)
        .get_result(conn)
}

/// Ends `current` at `now` (reason `manual`) and opens its remainder as a new period, both
/// with totals reconciled against the raw events.
fn split_period(
    conn: &mut PgConnection,
    subject: Subject,
    settings: &Settings,
    period: QuotaPeriod,
    now: DateTime<Utc>,
    current: &PeriodRow,
) -> QueryResult<()> {
    let p = period.as_str();
    let (user_id, org_id) = subject.key();
    let insert = |conn: &mut PgConnection, start: DateTime<Utc>, end: DateTime<Utc>| {
        diesel::sql_query(OPEN_SQL)
            .bind::<BigInt, _>(user_id)
            .bind::<BigInt, _>(org_id)
            .bind::<Text, _>(p)
            .bind::<Timestamptz, _>(start)
            .bind::<Timestamptz, _>(end)
            .execute(conn)
    };
    if current.status == "missing" {
        insert(conn, current.period_start, current.period_end)?;
    }
    diesel::sql_query(END_SQL)
        .bind::<BigInt, _>(user_id)
        .bind::<BigInt, _>(org_id)
        .bind::<Text, _>(p)
        .bind::<Timestamptz, _>(now)
        .bind::<Timestamptz, _>(current.period_start)
        .execute(conn)?;
    insert(conn, now, current.period_end)?;
    // Both halves are reconciled.
    diesel::sql_query(CLOSING_SQL)
        .bind::<BigInt, _>(user_id)
        .bind::<BigInt, _>(org_id)
        .bind::<Text, _>(p)
        .bind::<Timestamptz, _>(now)
        .bind::<Timestamptz, _>(current.period_start)
        .bind::<Timestamptz, _>(current.period_end)
        .bind::<Text, _>(&settings.timezone)
        .bind::<Nullable<Integer>, _>(settings.anchor)
        .bind::<Nullable<BigInt>, _>(settings.plan_id)
        .execute(conn)?;
    snapshot_and_count(conn)?;
    apply(conn, now)?;
    // The split moves the instants that cut the new half: its grants are settled again.
    diesel::sql_query(GRANT_UNSETTLE_SQL).execute(conn)?;
    conn.batch_execute("DROP TABLE usage_closing, usage_closing_raw")
}
