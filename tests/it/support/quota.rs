//! Helpers shared by the quota period tests: the reference period arithmetic in chrono-tz
//! that the SQL function is checked against, and reading periods back.

use chrono::{DateTime, Datelike, Months, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Numeric, Text, Timestamptz};
use usage_worker::jobs::aggregate::{self, Limit};

#[derive(QueryableByName, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    #[diesel(sql_type = Timestamptz)]
    pub period_start: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub period_end: DateTime<Utc>,
}

/// `usage_period_bounds` as the database computes it.
pub fn sql_bounds(
    conn: &mut PgConnection,
    tz: &str,
    anchor: Option<i32>,
    period: &str,
    instant: DateTime<Utc>,
) -> Bounds {
    diesel::sql_query("SELECT * FROM usage_period_bounds($1, $2, $3, $4)")
        .bind::<Text, _>(tz)
        .bind::<Nullable<Integer>, _>(anchor)
        .bind::<Text, _>(period)
        .bind::<Timestamptz, _>(instant)
        .get_result(conn)
        .unwrap()
}

/// The first instant whose local time in `tz` is at or after midnight of `day`.
pub fn reference_midnight(tz: Tz, day: NaiveDate) -> DateTime<Utc> {
    let midnight = day.and_hms_opt(0, 0, 0).unwrap();
    if let Some(t) = tz.from_local_datetime(&midnight).earliest() {
        return t.with_timezone(&Utc);
    }
    // Midnight was skipped: the day starts at the clock change, the first local time that exists.
    (1..=24 * 60)
        .find_map(|minutes| {
            tz.from_local_datetime(&(midnight + chrono::Duration::minutes(minutes)))
                .earliest()
        })
        .unwrap()
        .with_timezone(&Utc)
}

fn anchor_date(month_start: NaiveDate, anchor: Option<u32>) -> NaiveDate {
    let next = month_start.checked_add_months(Months::new(1)).unwrap();
    let last_day = next.pred_opt().unwrap().day();
    month_start
        .with_day(anchor.unwrap_or(1).min(last_day))
        .unwrap()
}

fn reference_dates(day: NaiveDate, anchor: Option<u32>, period: &str) -> (NaiveDate, NaiveDate) {
    if period == "day" {
        return (day, day.succ_opt().unwrap());
    }
    let mut month = day.with_day(1).unwrap();
    if anchor_date(month, anchor) > day {
        month = month.checked_sub_months(Months::new(1)).unwrap();
    }
    (
        anchor_date(month, anchor),
        anchor_date(month.checked_add_months(Months::new(1)).unwrap(), anchor),
    )
}

/// The period containing `instant`, computed independently with chrono-tz.
pub fn reference_bounds(
    tz: Tz,
    anchor: Option<u32>,
    period: &str,
    instant: DateTime<Utc>,
) -> Bounds {
    let local_day = instant.with_timezone(&tz).date_naive();
    let (start, end) = reference_dates(local_day, anchor, period);
    Bounds {
        period_start: reference_midnight(tz, start),
        period_end: reference_midnight(tz, end),
    }
}

/// Adds every committed event of this database not yet counted, through the aggregate
/// transaction itself, in one batch. Not bounded by the cluster's oldest open transaction as
/// the job is: another test's, in another database, must not hold this one back, and no
/// transaction of this test is open while it runs.
pub fn add_new_events_to_periods(conn: &mut PgConnection) {
    #[derive(QueryableByName)]
    struct Next {
        #[diesel(sql_type = Nullable<Text>)]
        xid: Option<String>,
    }
    let next = diesel::sql_query(
        "SELECT (max(recorded_xid::text::numeric) + 1)::text AS xid FROM usage_events",
    )
    .get_result::<Next>(conn)
    .unwrap();
    let Some(limit) = next.xid.map(|x| x.parse::<u64>().unwrap()) else {
        return;
    };
    aggregate::transaction(conn, i64::MAX, Limit::Below(limit)).unwrap();
}

#[derive(QueryableByName, Debug, Clone, PartialEq)]
pub struct PeriodRow {
    #[diesel(sql_type = BigInt)]
    pub user_id: i64,
    #[diesel(sql_type = Timestamptz)]
    pub period_start: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub period_end: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub close_reason: Option<String>,
    #[diesel(sql_type = BigInt)]
    pub requests: i64,
    #[diesel(sql_type = BigInt)]
    pub tokens: i64,
    #[diesel(sql_type = Numeric)]
    pub cost: bigdecimal::BigDecimal,
}

/// A user's personal periods of one kind (org_id 0), oldest first.
pub fn periods(conn: &mut PgConnection, user_id: i64, period: &str) -> Vec<PeriodRow> {
    diesel::sql_query(
        "SELECT user_id, period_start, period_end, status, close_reason, requests, tokens, cost
           FROM usage_periods WHERE user_id = $1 AND org_id = 0 AND period = $2
          ORDER BY period_start",
    )
    .bind::<BigInt, _>(user_id)
    .bind::<Text, _>(period)
    .load(conn)
    .unwrap()
}

/// Sum of the raw events' tokens and count in [from, to) of one user's personal usage (events
/// without an organization).
pub fn raw_sums(
    conn: &mut PgConnection,
    user_id: i64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> (i64, i64) {
    raw_sums_where(conn, "user_id = $1 AND org_id IS NULL", user_id, from, to)
}

/// Count and token sum of the raw events in [from, to) that `condition` (on `$1` = `id`)
/// selects: one subject's events.
pub fn raw_sums_where(
    conn: &mut PgConnection,
    condition: &str,
    id: i64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> (i64, i64) {
    #[derive(QueryableByName)]
    struct Sums {
        #[diesel(sql_type = BigInt)]
        requests: i64,
        #[diesel(sql_type = BigInt)]
        tokens: i64,
    }
    let s: Sums = diesel::sql_query(format!(
        "SELECT count(*)::bigint AS requests, COALESCE(sum(tokens), 0)::bigint AS tokens
           FROM usage_events
          WHERE {condition} AND created_at >= $2 AND created_at < $3"
    ))
    .bind::<BigInt, _>(id)
    .bind::<Timestamptz, _>(from)
    .bind::<Timestamptz, _>(to)
    .get_result(conn)
    .unwrap();
    (s.requests, s.tokens)
}

/// The monthly token limit in the JSON of a quota report (`--usage --json`).
pub fn month_tokens(report: &serde_json::Value) -> &serde_json::Value {
    report["limits"]
        .as_array()
        .expect("limits in the quota report")
        .iter()
        .find(|l| l["metric"] == "tokens" && l["period"] == "month")
        .expect("a monthly token limit in the quota report")
}
