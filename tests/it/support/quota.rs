//! Helpers shared by the quota period tests: the reference period arithmetic in chrono-tz
//! that the SQL function is checked against, a subject's events, and reading its periods back
//! next to the raw events they must equal.

use chrono::{DateTime, Datelike, Months, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Numeric, Text, Timestamptz};
use usage_worker::jobs::aggregate::{self, Limit};
use usage_worker::subject::Subject;

use super::TestDb;

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

/// A subject's periods of one kind, oldest first.
pub fn periods(conn: &mut PgConnection, subject: Subject, period: &str) -> Vec<PeriodRow> {
    let (user_id, org_id) = subject.key();
    diesel::sql_query(
        "SELECT period_start, period_end, status, close_reason, requests, tokens, cost
           FROM usage_periods WHERE user_id = $1 AND org_id = $2 AND period = $3
          ORDER BY period_start",
    )
    .bind::<BigInt, _>(user_id)
    .bind::<BigInt, _>(org_id)
    .bind::<Text, _>(period)
    .load(conn)
    .unwrap()
}

/// Count and token sum of a subject's raw events in [from, to): a user's personal events
/// (without an organization), or the events spent in an organization by any member.
pub fn raw_sums(
    conn: &mut PgConnection,
    subject: Subject,
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
    let condition = match subject {
        Subject::User(_) => "user_id = $1 AND org_id IS NULL",
        Subject::Org(_) => "org_id = $1",
    };
    let id = subject.report_key().1;
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

/// The subject's periods of one kind follow each other without gap or overlap, and each
/// closed one holds exactly the subject's raw events in its range. The periods, oldest first.
pub fn assert_tiled_and_exact(db: &TestDb, subject: Subject, period: &str) -> Vec<PeriodRow> {
    let mut conn = db.conn();
    let rows = periods(&mut conn, subject, period);
    for pair in rows.windows(2) {
        assert_eq!(
            pair[0].period_end, pair[1].period_start,
            "{subject}: gap or overlap: {pair:?}"
        );
    }
    for row in rows.iter().filter(|p| p.status == "closed") {
        let raw = raw_sums(&mut conn, subject, row.period_start, row.period_end);
        assert_eq!((row.requests, row.tokens), raw, "{subject}: {row:?}");
    }
    rows
}

/// One event of `kind` and `tokens` (costing a thousandth a token) that `user` spent at
/// `created_at` in organization `org` (None: personal usage).
pub fn event(db: &TestDb, user: i64, org: Option<i64>, kind: &str, tokens: i64, created_at: &str) {
    let org = org.map_or("NULL".to_string(), |o| o.to_string());
    db.execute(&format!(
        "INSERT INTO usage_events (user_id, org_id, kind, tokens, cost, created_at)
         VALUES ({user}, {org}, '{kind}', {tokens}, {tokens} * 0.001, '{created_at}')"
    ));
}

/// One event of `kind` and `tokens` of `subject`'s usage at `created_at`: spent by the user
/// personally, or by `member` in the organization.
pub fn spend(
    db: &TestDb,
    subject: Subject,
    member: i64,
    kind: &str,
    tokens: i64,
    created_at: &str,
) {
    let spender = subject.user_id().unwrap_or(member);
    event(db, spender, subject.org_id(), kind, tokens, created_at);
}

/// Opens the subject's natural `period` containing `instant` with zero totals, unless it has
/// one there already (`aggregate` opens it for the subject's first event).
pub fn open_period(db: &TestDb, subject: Subject, period: &str, instant: &str) {
    let (user_id, org_id) = subject.key();
    db.execute(&format!(
        "INSERT INTO usage_periods (user_id, org_id, period, period_start, period_end)
         SELECT s.user_id, s.org_id, '{period}', b.period_start, b.period_end
           FROM usage_subjects s
          CROSS JOIN LATERAL usage_period_bounds(s.timezone, s.billing_anchor_day, '{period}',
                                                 '{instant}') b
          WHERE s.user_id = {user_id} AND s.org_id = {org_id}
         ON CONFLICT DO NOTHING"
    ));
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
