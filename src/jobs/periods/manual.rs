//! Manual resets (`--run reset-daily --user 42`, `--run reset-monthly --org 7`): the current
//! period of one user or organization ends at the given instant and a new one starts there.

use chrono::{DateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Integer, Nullable, Text, Timestamptz};
use serde_json::json;

use super::tally::warn_unknown_zone;
use super::{APPLY_SQL, QuotaPeriod, RAW_SQL, Subject, lock_out_aggregation};
use crate::jobs::{JobError, JobReport};

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
    let (sql, id, missing) = match subject {
        Subject::User(id) => (
            "SELECT timezone, billing_anchor_day::int AS anchor, plan_id,
                    usage_timezone_is_valid(timezone) AS known_zone
               FROM users WHERE id = $1",
            id,
            format!("user {id} is not in the users table; check the id given to --user"),
        ),
        Subject::Org(id) => (
            "SELECT timezone, billing_anchor_day::int AS anchor, plan_id,
                    usage_timezone_is_valid(timezone) AS known_zone
               FROM organizations WHERE id = $1",
            id,
            format!(
                "organization {id} is not in the organizations table; check the id given to --org"
            ),
        ),
    };
    let settings: Option<Settings> = diesel::sql_query(sql)
        .bind::<BigInt, _>(id)
        .get_result(conn)
        .optional()?;
    let settings = settings.ok_or(JobError::Invalid(missing))?;
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
    diesel::sql_query(
        "SELECT COALESCE(cur.period_start, GREATEST(b.period_start, prev.period_end)) AS period_start,
                COALESCE(cur.period_end, LEAST(b.period_end, nxt.period_start)) AS period_end,
                COALESCE(cur.status, 'missing') AS status
           FROM usage_period_bounds($4, $5, $2, $3) b
           LEFT JOIN usage_periods cur ON cur.user_id = $1 AND cur.org_id = $6 AND cur.period = $2
                 AND cur.period_start <= $3 AND cur.period_end > $3
           LEFT JOIN LATERAL (SELECT max(up.period_end) AS period_end FROM usage_periods up
                               WHERE up.user_id = $1 AND up.org_id = $6 AND up.period = $2
                                 AND up.period_end <= $3) prev ON true
           LEFT JOIN LATERAL (SELECT min(up.period_start) AS period_start FROM usage_periods up
                               WHERE up.user_id = $1 AND up.org_id = $6 AND up.period = $2
                                 AND up.period_start > $3) nxt ON true",
    )
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
        diesel::sql_query(
            "INSERT INTO usage_periods (user_id, org_id, period, period_start, period_end)
             VALUES ($1, $2, $3, $4, $5)",
        )
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
    diesel::sql_query(
        "UPDATE usage_periods SET period_end = $4
          WHERE user_id = $1 AND org_id = $2 AND period = $3 AND period_start = $5",
    )
    .bind::<BigInt, _>(user_id)
    .bind::<BigInt, _>(org_id)
    .bind::<Text, _>(p)
    .bind::<Timestamptz, _>(now)
    .bind::<Timestamptz, _>(current.period_start)
    .execute(conn)?;
    insert(conn, now, current.period_end)?;
    // Both halves are reconciled: events already counted in the old period that belong
    // after `now` move to the new one. The columns are those reset_due.sql gives.
    diesel::sql_query(
        "CREATE TEMP TABLE usage_closing ON COMMIT DROP AS
         SELECT $1::bigint AS user_id, $2::bigint AS org_id, $3::text AS period, v.period_start,
                v.period_end, v.close_reason, $7::text AS zone, $8::int AS anchor,
                $9::bigint AS plan_id
           FROM (VALUES ($5::timestamptz, $4::timestamptz, 'manual'::text),
                        ($4::timestamptz, $6::timestamptz, NULL::text))
                AS v (period_start, period_end, close_reason)",
    )
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
    diesel::sql_query(RAW_SQL).execute(conn)?;
    diesel::sql_query(APPLY_SQL)
        .bind::<Timestamptz, _>(now)
        .execute(conn)?;
    conn.batch_execute("DROP TABLE usage_closing, usage_closing_raw")
}
