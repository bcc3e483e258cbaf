//! Projected exhaustion: `usage_projected_exhaustion()` and the `projected_exhaustion` column
//! of `quota_status()` / `org_quota_status()`, the instant the period's average pace so far
//! (used over the time since the period started) reaches the plan's limit.
//! - For random periods, instants, usage and limits (whole, fractional, zero, huge), the
//!   function gives the first second at which an independent brute-force simulation, stepping a
//!   second at a time at that pace from the period's start, reaches the limit, and NULL exactly
//!   when the simulation does not reach it before the period ends; the column of
//!   `quota_status()` does the same from real plan limits and events, aggregated or not.
//! - Named edge cases: usage at or past the limit (at or before `at`), limit 0, a huge limit
//!   against tiny usage (NULL, not an overflow), `at` at or outside the period's bounds, no
//!   limit.
//! - Steady usage (a user's month and day in their zone, an organization's month) projects
//!   within 5 % of the instant the steady rate reaches the limit; grants do not move it.
//! - The projection is made at `p_at`: usage that stopped projects later the later it is seen,
//!   then NULL once the pace no longer reaches the limit before the period ends (never an
//!   instant in the next period).
//! - Events `aggregate` has not counted yet count in it exactly as in `used`.
//!
//! Every instant is fixed (2026), passed as `p_at`; nothing depends on today's date.

use std::cell::{Cell, RefCell};

use chrono::{DateTime, Duration, TimeZone, Utc};
use chrono_tz::Tz;
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::grants::grant;
use crate::support::quota::{add_new_events_to_periods, reference_bounds};
use crate::support::{TestDb, at};

const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;

/// `usage_projected_exhaustion(used, limit, start, end, at)`; `used` and `limit` are SQL
/// numeric literals (or `NULL`).
fn projected(
    conn: &mut PgConnection,
    used: &str,
    limit: &str,
    bounds: (DateTime<Utc>, DateTime<Utc>),
    at: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    #[derive(QueryableByName)]
    struct P {
        #[diesel(sql_type = Nullable<Timestamptz>)]
        p: Option<DateTime<Utc>>,
    }
    let sql = format!(
        "SELECT usage_projected_exhaustion({used}::numeric, {limit}::numeric, $1, $2, $3) AS p"
    );
    diesel::sql_query(&sql)
        .bind::<Timestamptz, _>(bounds.0)
        .bind::<Timestamptz, _>(bounds.1)
        .bind::<Timestamptz, _>(at)
        .get_result::<P>(conn)
        .unwrap_or_else(|e| panic!("{sql} ({bounds:?}, {at}): {e}"))
        .p
}

/// A row of `quota_status()` or `org_quota_status()` for all-kinds tokens, and what
/// `usage_projected_exhaustion()` makes of that row's own numbers at the same `p_at`.
#[derive(QueryableByName, Debug)]
struct TokensRow {
    #[diesel(sql_type = BigInt)]
    used: i64,
    /// Text: a limit may be beyond bigint.
    #[diesel(sql_type = Nullable<Text>)]
    limit_value: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    period_start: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    period_end: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Text>)]
    remaining: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    projected_exhaustion: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    from_row: Option<DateTime<Utc>>,
}

/// The `period` tokens row of `function(id, p_at)` (`quota_status` or `org_quota_status`).
fn tokens_row(
    conn: &mut PgConnection,
    function: &str,
    id: i64,
    period: &str,
    p_at: DateTime<Utc>,
) -> TokensRow {
    let sql = format!(
        "SELECT used::bigint AS used, limit_value::text AS limit_value, period_start, period_end,
                remaining::text AS remaining, projected_exhaustion,
                usage_projected_exhaustion(used, limit_value, period_start, period_end, $2)
                    AS from_row
           FROM {function}($1, $2)
          WHERE metric = 'tokens' AND period = '{period}' AND kind = ''"
    );
    diesel::sql_query(&sql)
        .bind::<BigInt, _>(id)
        .bind::<Timestamptz, _>(p_at)
        .get_result::<TokensRow>(conn)
        .unwrap_or_else(|e| panic!("{function}({id}, {p_at}) {period} tokens: {e}"))
}

/// The seconds after the period's start at which usage going on at the average pace so far
/// has reached `limit`, found by brute force: from the period's start, a second at a time,
/// each second adding `used / at` (the pace seen `at` seconds into the period), up to and
/// including the period's end (`length` seconds in). None when it does not get there, and when
/// there is no pace to go on: no limit, no usage, `at` not inside the period.
///
/// Exact in integers: the cumulative usage is kept multiplied by `at`.
fn simulate(used: i128, limit: Option<i128>, length: i64, at: i64) -> Option<i64> {
    let limit = limit?;
    if used <= 0 || at <= 0 || at >= length {
        return None;
    }
    let target = limit * i128::from(at);
    let mut cumulative = 0i128;
    for second in 0..=length {
        if cumulative >= target {
            return Some(second);
        }
        cumulative += used;
    }
    None
}

/// The SQL answer `got` agrees with the simulation's `simulated` second (of a period from
/// `start`, `length` seconds long, seen `at` seconds in): within one second of it and inside
/// the period, at or before `at` when usage has reached the limit; NULL exactly when the
/// simulation does not reach the limit before the period ends. When it reaches it only in the
/// period's last second, the exact instant may be the end itself: then NULL, or an instant in
/// that last second.
fn agrees(
    got: Option<DateTime<Utc>>,
    simulated: Option<i64>,
    start: DateTime<Utc>,
    length: i64,
    at: i64,
    reached: bool,
) -> Result<(), TestCaseError> {
    let end = start + Duration::seconds(length);
    match (got, simulated) {
        (None, None) => Ok(()),
        (None, Some(second)) => {
            prop_assert_eq!(
                second,
                length,
                "NULL, but the simulation reaches the limit {}s into the period",
                second
            );
            Ok(())
        }
        (Some(got), Some(second)) => {
            let step = start + Duration::seconds(second);
            prop_assert!(
                (got - step).abs() <= Duration::seconds(1),
                "{} is not within a second of the simulation's {}",
                got,
                step
            );
            prop_assert!(
                start <= got && got < end,
                "{} is outside the period [{}, {})",
                got,
                start,
                end
            );
            if reached {
                prop_assert!(
                    got <= start + Duration::seconds(at),
                    "the limit is reached already, yet {} is after at",
                    got
                );
            }
            Ok(())
        }
        (Some(got), None) => Err(TestCaseError::fail(format!(
            "{got}, but the simulation does not reach the limit before the period ends ({end})"
        ))),
    }
}

/// Where a generated limit comes from.
#[derive(Debug, Clone)]
enum LimitCase {
    Unlimited,
    Zero,
    /// Whatever makes the projection fall near this fraction (millionths) of the period: from
    /// before `at` to past the period's end.
    Aimed(i128),
    /// 10^24 to 10^30 (thousandths): no usage here reaches it.
    Huge(i128),
    Any(i128),
}

impl LimitCase {
    /// The limit, in the same unit as `used`, for a period `length` seconds long seen `at`
    /// seconds in.
    fn value(&self, used: i128, length: i64, at: i64) -> Option<i128> {
        match *self {
            LimitCase::Unlimited => None,
            LimitCase::Zero => Some(0),
            LimitCase::Aimed(ppm) if used > 0 && at > 0 => {
                Some(used * ppm * i128::from(length) / (i128::from(at) * 1_000_000))
            }
            LimitCase::Aimed(ppm) => Some(ppm),
            LimitCase::Huge(limit) | LimitCase::Any(limit) => Some(limit),
        }
    }
}

fn limit_case() -> impl Strategy<Value = LimitCase> {
    prop_oneof![
        1 => Just(LimitCase::Unlimited),
        1 => Just(LimitCase::Zero),
        8 => (0i128..1_500_000).prop_map(LimitCase::Aimed),
        2 => (10i128.pow(24)..10i128.pow(30)).prop_map(LimitCase::Huge),
        2 => (1i128..1_000_000_000_000).prop_map(LimitCase::Any),
    ]
}

/// A call of the function: a period of `length` seconds from `start` (Unix seconds), seen `at`
/// seconds in (at its start, its end, before or after it too), with usage and a limit in
/// thousandths.
#[derive(Debug, Clone)]
struct Call {
    start: i64,
    length: i64,
    at: i64,
    used_milli: i128,
    limit: LimitCase,
}

fn call() -> impl Strategy<Value = Call> {
    // 2026-01-01 .. 2027-01-01; a day, days of a clock change, months of 28 to 31 days.
    let starts = 1_767_225_600i64..1_798_761_600;
    let lengths = prop_oneof![
        Just(DAY),
        Just(DAY - HOUR),
        Just(DAY + HOUR),
        (28i64..=31).prop_map(|days| days * DAY),
        (28i64..=31).prop_map(|days| days * DAY - HOUR),
    ];
    (starts, lengths).prop_flat_map(|(start, length)| {
        let at = prop_oneof![
            1 => Just(0),
            1 => Just(length),
            1 => length..length + DAY,
            1 => -DAY..0i64,
            12 => 1..length,
        ];
        let used = prop_oneof![
            1 => Just(0i128),
            1 => -5_000i128..0,
            2 => 1i128..1_000,
            6 => 1_000i128..1_000_000_000_000,
        ];
        (Just(start), Just(length), at, used, limit_case()).prop_map(
            |(start, length, at, used_milli, limit)| Call {
                start,
                length,
                at,
                used_milli,
                limit,
            },
        )
    })
}

/// Thousandths as a numeric literal.
fn milli(value: i128) -> String {
    let sign = if value < 0 { "-" } else { "" };
    let value = value.abs();
    format!("{sign}{}.{:03}", value / 1000, value % 1000)
}

fn unix(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(seconds, 0).unwrap()
}

#[test]
fn the_projection_is_the_second_a_brute_force_simulation_of_the_pace_reaches_the_limit() {
    let db = TestDb::new();
    let conn = RefCell::new(db.conn());
    let mut runner = TestRunner::new(Config {
        cases: 32,
        ..Config::default()
    });
    runner
        .run(&call(), |call| {
            let conn = &mut *conn.borrow_mut();
            let start = unix(call.start);
            let bounds = (start, start + Duration::seconds(call.length));
            let limit = (call.limit).value(call.used_milli, call.length, call.at);
            let literal = limit.map_or("NULL".to_string(), milli);
            let got = projected(
                conn,
                &milli(call.used_milli),
                &literal,
                bounds,
                start + Duration::seconds(call.at),
            );
            let simulated = simulate(call.used_milli, limit, call.length, call.at);
            let reached = limit.is_some_and(|l| call.used_milli >= l);
            agrees(got, simulated, start, call.length, call.at, reached)
                .map_err(|e| TestCaseError::fail(format!("{e}; limit {literal}, {call:?}")))
        })
        .unwrap();
}

#[test]
fn usage_at_or_past_the_limit_a_zero_or_huge_limit_and_bounds_give_the_named_answers() {
    let db = TestDb::new();
    let mut conn = db.conn();
    let (start, end) = (at("2026-11-01T00:00:00Z"), at("2026-12-01T00:00:00Z"));
    let tenth = at("2026-11-11T00:00:00Z");
    let t = |text: &str| Some(at(text));
    #[rustfmt::skip]
    let cases = [
        // Past the limit: when the average pace reached it, before `at`.
        ("500", "100", tenth, t("2026-11-03T00:00:00Z")),
        // Exactly at the limit: at `at`.
        ("100", "100", tenth, Some(tenth)),
        // Limit 0: reached as the period began.
        ("1", "0", tenth, Some(start)),
        ("0.001", "0", tenth, Some(start)),
        // A fractional pace, 2.5 in 10 days: 7.5 exactly at the period's end (NULL: the
        // period resets first), 7.4 on its last day.
        ("2.5", "7.5", tenth, None),
        ("2.5", "7.4", tenth, t("2026-11-30T14:24:00Z")),
        // Huge limits against tiny usage: NULL, no overflow.
        ("0.001", "1e30", tenth, None),
        ("1", "1e300", tenth, None),
        ("1e-20", "9999999999999999999999999999", at("2026-11-30T23:59:59Z"), None),
        // Huge usage against a small limit: the period's start, to the microsecond.
        ("1e300", "1", tenth, Some(start)),
        // No pace: no time has passed, or no usage.
        ("10", "100", start, None),
        ("0", "100", tenth, None),
        ("-5", "100", tenth, None),
        ("NULL", "100", tenth, None),
        // No limit.
        ("10", "NULL", tenth, None),
        // `at` outside the period: no instant of another period's pace.
        ("10", "100", end, None),
        ("10", "100", at("2026-10-31T23:59:59Z"), None),
    ];
    for (used, limit, when, expected) in cases {
        let got = projected(&mut conn, used, limit, (start, end), when);
        assert_eq!(got, expected, "used {used}, limit {limit}, at {when}");
    }
}

/// Months whose reference instant (mid-month, UTC) the property's periods contain: February,
/// the months of the spring and autumn clock changes, a 30- and a 31-day month.
const MONTHS: [&str; 5] = [
    "2026-02-14T12:00:00Z",
    "2026-03-20T12:00:00Z",
    "2026-10-20T12:00:00Z",
    "2026-11-14T12:00:00Z",
    "2026-12-14T12:00:00Z",
];

const ZONES: [&str; 4] = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"];

/// A user on a plan with a monthly token limit (or none), with events before `at`.
#[derive(Debug, Clone)]
struct UserCase {
    month: usize,
    zone: usize,
    /// Where `at` is in the period, in millionths (0: at its start).
    at_ppm: i64,
    /// (tokens, where in [start, at), in millionths).
    events: Vec<(i64, i64)>,
    limit: LimitCase,
    /// Whether `aggregate` counts the events before quota_status() is asked.
    aggregated: bool,
}

fn user_case() -> impl Strategy<Value = UserCase> {
    let limit = prop_oneof![
        1 => Just(LimitCase::Unlimited),
        1 => Just(LimitCase::Zero),
        8 => (0i128..1_500_000).prop_map(LimitCase::Aimed),
        1 => (10i128.pow(20)..10i128.pow(30)).prop_map(LimitCase::Huge),
    ];
    (
        0..MONTHS.len(),
        0..ZONES.len(),
        prop_oneof![1 => Just(0i64), 9 => 1i64..1_000_000],
        prop::collection::vec((1i64..5_000, 0i64..1_000_000), 0..6),
        limit,
        any::<bool>(),
    )
        .prop_map(
            |(month, zone, at_ppm, events, limit, aggregated)| UserCase {
                month,
                zone,
                at_ppm,
                events,
                limit,
                aggregated,
            },
        )
}

#[test]
fn quota_status_projects_from_real_limits_and_events_as_the_simulation_does() {
    let db = TestDb::new();
    let conn = RefCell::new(db.conn());
    let next_user = Cell::new(100);
    let mut runner = TestRunner::new(Config {
        cases: 24,
        ..Config::default()
    });
    runner
        .run(&user_case(), |case| {
            let conn = &mut *conn.borrow_mut();
            let user = next_user.get();
            next_user.set(user + 1);
            let zone = ZONES[case.zone];
            let tz: Tz = zone.parse().unwrap();
            let month = reference_bounds(tz, None, "month", at(MONTHS[case.month]));
            let (start, end) = (month.period_start, month.period_end);
            let length = (end - start).num_seconds();
            let at_offset = length * case.at_ppm / 1_000_000;
            let p_at = start + Duration::seconds(at_offset);
            // Events in [start, at), and a big one just before the period that must not count.
            let mut rows = vec![(1_000_000, start - Duration::seconds(1))];
            if at_offset > 0 {
                rows.extend(case.events.iter().map(|&(tokens, ppm)| {
                    (
                        tokens,
                        start + Duration::seconds(at_offset * ppm / 1_000_000),
                    )
                }));
            }
            let used: i64 = rows.iter().skip(1).map(|(tokens, _)| tokens).sum();
            let limit = case.limit.value(i128::from(used), length, at_offset);
            let values: Vec<String> = (rows.iter())
                .map(|(tokens, when)| {
                    format!("({user}, 'ai_response', {tokens}, '{}')", when.to_rfc3339())
                })
                .collect();
            let limit_row = limit.map_or(String::new(), |l| {
                format!(
                    "INSERT INTO plan_limits (plan_id, metric, period, kind, max_value)
                     VALUES ({user}, 'tokens', 'month', '', {l});"
                )
            });
            conn.batch_execute(&format!(
                "INSERT INTO plans (id, name) VALUES ({user}, 'plan {user}');
                     {limit_row}
                     INSERT INTO users (id, email, timezone, plan_id)
                     VALUES ({user}, 'user{user}@example.com', '{zone}', {user});
                     INSERT INTO usage_events (user_id, kind, tokens, created_at)
                     VALUES {};",
                values.join(", ")
            ))
            .unwrap();
            if case.aggregated {
                add_new_events_to_periods(conn);
            }
            let row = tokens_row(conn, "quota_status", user, "month", p_at);
            prop_assert_eq!((row.period_start, row.period_end), (start, end));
            prop_assert_eq!(row.used, used);
            prop_assert_eq!(row.limit_value.clone(), limit.map(|l| l.to_string()));
            let simulated = simulate(i128::from(used), limit, length, at_offset);
            let reached = limit.is_some_and(|l| i128::from(used) >= l);
            agrees(
                row.projected_exhaustion,
                simulated,
                start,
                length,
                at_offset,
                reached,
            )
            .map_err(|e| TestCaseError::fail(format!("{e}; user {user} at {p_at}, {case:?}")))
        })
        .unwrap();
}

/// `tokens` every `every` (an interval) from `from` until before `until`, spent by `user`
/// personally (`org` None) or in organization `org`.
fn steady(
    db: &TestDb,
    (user, org): (i64, Option<i64>),
    tokens: i64,
    span: (&str, &str),
    every: &str,
) {
    let org = org.map_or("NULL".to_string(), |o| o.to_string());
    let (from, until) = span;
    db.execute(&format!(
        "INSERT INTO usage_events (user_id, org_id, kind, tokens, created_at)
         SELECT {user}, {org}, 'ai_response', {tokens}, t
           FROM generate_series('{from}'::timestamptz,
                                '{until}'::timestamptz - interval '1 microsecond',
                                '{every}'::interval) t"
    ));
}

/// `got` is within 5 % of `linear`, measured against the time from `start` to `linear`.
fn assert_within_5_percent(
    got: Option<DateTime<Utc>>,
    linear: DateTime<Utc>,
    start: DateTime<Utc>,
    what: &str,
) {
    let got = got.unwrap_or_else(|| {
        panic!("{what}: no projection; the steady rate reaches the limit at {linear}")
    });
    let span = (linear - start).num_seconds() as f64;
    let off = (got - linear).num_seconds().abs() as f64;
    assert!(
        off <= 0.05 * span,
        "{what}: projected {got}, the steady rate reaches the limit at {linear} ({:.1} % off)",
        100.0 * off / span
    );
}

/// Plan 1: 6000 tokens a month; plan 2: 2400 tokens a day. User 1 (UTC) and organization 7
/// (Europe/Berlin, members 2 and 4) are on plan 1, user 3 (Asia/Kolkata) on plan 2.
fn seed_steady(db: &TestDb) {
    db.execute(
        "INSERT INTO plans (id, name) VALUES (1, 'monthly'), (2, 'daily');
         INSERT INTO plan_limits (plan_id, metric, period, kind, max_value)
         VALUES (1, 'tokens', 'month', '', 6000), (2, 'tokens', 'day', '', 2400);
         INSERT INTO users (id, email, timezone, plan_id)
         VALUES (1, 'ada@example.com', 'UTC', 1), (2, 'bob@example.com', 'UTC', NULL),
                (3, 'cy@example.com', 'Asia/Kolkata', 2), (4, 'di@example.com', 'UTC', NULL);",
    );
    db.add_organization(7, "Acme", "Europe/Berlin", None, Some(1));
    db.add_member(7, 2, "owner");
    db.add_member(7, 4, "member");
}

#[test]
fn steady_usage_projects_within_5_percent_of_when_the_rate_reaches_the_limit() {
    let db = TestDb::new();
    seed_steady(&db);
    let mut conn = db.conn();

    // User 1's month: 10 tokens an hour from November 1st; 6000 are reached 600 hours in.
    let p_at = at("2026-11-15T10:17:00Z");
    steady(
        &db,
        (1, None),
        10,
        ("2026-11-01T00:00:00Z", "2026-11-15T10:17:00Z"),
        "1 hour",
    );
    let month = tokens_row(&mut conn, "quota_status", 1, "month", p_at);
    assert_eq!(month.period_start, at("2026-11-01T00:00:00Z"));
    let linear = month.period_start + Duration::hours(600);
    assert_within_5_percent(
        month.projected_exhaustion,
        linear,
        month.period_start,
        "user 1's month",
    );
    // A grant raises what is left, not the projection of the plan's limit.
    grant(
        &db,
        "p_user_id => 1",
        "tokens",
        5000,
        ("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z"),
    );
    let granted = tokens_row(&mut conn, "quota_status", 1, "month", p_at);
    let left = |row: &TokensRow| {
        row.remaining
            .as_deref()
            .unwrap_or("")
            .parse::<i64>()
            .unwrap()
    };
    assert_eq!(
        left(&granted),
        left(&month) + 5000,
        "the grant is counted in remaining"
    );
    assert_eq!(
        granted.projected_exhaustion, month.projected_exhaustion,
        "a grant moved the projection"
    );

    // User 3's day in Kolkata (UTC+05:30): 20 tokens every 10 minutes from local midnight,
    // 120 an hour; 2400 are reached 20 hours in. The evening before must not count.
    db.execute(
        "INSERT INTO usage_events (user_id, kind, tokens, created_at)
         VALUES (3, 'ai_response', 5000, '2026-11-09T18:00:00Z')",
    );
    let p_at = at("2026-11-10T03:37:00Z");
    steady(
        &db,
        (3, None),
        20,
        ("2026-11-09T18:30:00Z", "2026-11-10T03:37:00Z"),
        "10 minutes",
    );
    let day = tokens_row(&mut conn, "quota_status", 3, "day", p_at);
    assert_eq!(
        day.period_start,
        at("2026-11-09T18:30:00Z"),
        "local midnight"
    );
    let linear = day.period_start + Duration::hours(20);
    assert_within_5_percent(
        day.projected_exhaustion,
        linear,
        day.period_start,
        "user 3's day",
    );
    // The plan limits user 3's days only: no projection for the month.
    let unlimited = tokens_row(&mut conn, "quota_status", 3, "month", p_at);
    assert_eq!(
        (unlimited.limit_value, unlimited.projected_exhaustion),
        (None, None)
    );

    // Organization 7's month in Berlin: members 2 and 4 spend 6 and 4 tokens an hour in it,
    // 10 an hour; user 2's personal usage (no plan, no limit) is not the organization's.
    let org_start = "2026-10-31T23:00:00Z";
    let p_at = at("2026-11-12T08:00:00Z");
    steady(
        &db,
        (2, Some(7)),
        6,
        (org_start, "2026-11-12T08:00:00Z"),
        "1 hour",
    );
    steady(
        &db,
        (4, Some(7)),
        4,
        ("2026-10-31T23:30:00Z", "2026-11-12T08:00:00Z"),
        "1 hour",
    );
    steady(
        &db,
        (2, None),
        100,
        (org_start, "2026-11-12T08:00:00Z"),
        "1 hour",
    );
    let org = tokens_row(&mut conn, "org_quota_status", 7, "month", p_at);
    assert_eq!(org.period_start, at(org_start), "midnight in Berlin");
    let linear = org.period_start + Duration::hours(600);
    assert_within_5_percent(
        org.projected_exhaustion,
        linear,
        org.period_start,
        "organization 7's month",
    );
    let personal = tokens_row(&mut conn, "quota_status", 2, "month", p_at);
    assert_eq!(personal.projected_exhaustion, None, "user 2 has no limit");
}

/// `start + limit / used × (at − start)`, to the microsecond.
fn linear_projection(
    start: DateTime<Utc>,
    used: i64,
    limit: i64,
    at: DateTime<Utc>,
) -> DateTime<Utc> {
    let elapsed = (at - start).num_microseconds().unwrap();
    start + Duration::microseconds(elapsed * limit / used)
}

fn assert_near(got: Option<DateTime<Utc>>, expected: DateTime<Utc>, what: &str) {
    let got = got.unwrap_or_else(|| panic!("{what}: no projection, expected {expected}"));
    assert!(
        (got - expected).abs() <= Duration::milliseconds(1),
        "{what}: projected {got}, expected {expected}"
    );
}

#[test]
fn the_projection_is_made_at_p_at_and_is_null_once_the_pace_misses_the_period() {
    let db = TestDb::new();
    seed_steady(&db);
    db.execute("UPDATE plan_limits SET max_value = 4000 WHERE plan_id = 1");
    // 10 tokens an hour for nine days, 2160, then nothing: seen later, the same usage is a
    // slower average pace, so the limit is projected later, until the pace no longer reaches
    // it before December.
    steady(
        &db,
        (1, None),
        10,
        ("2026-11-01T00:00:00Z", "2026-11-10T00:00:00Z"),
        "1 hour",
    );
    let start = at("2026-11-01T00:00:00Z");
    let mut conn = db.conn();
    let mut earlier = start;
    for (p_at, expected) in [
        ("2026-11-10T00:00:00Z", Some("2026-11-17T16:00:00Z")),
        ("2026-11-13T00:00:00Z", Some("2026-11-23T05:20:00Z")),
        // 388 hours in: 718.5 hours, the last projection inside November.
        ("2026-11-17T04:00:00Z", Some("2026-11-30T22:31:06.666666Z")),
        // 389 hours in: 720.4 hours, past the end of November.
        ("2026-11-17T05:00:00Z", None),
        ("2026-11-30T23:59:59Z", None),
    ] {
        let p_at = at(p_at);
        let row = tokens_row(&mut conn, "quota_status", 1, "month", p_at);
        assert_eq!((row.used, row.period_start), (2160, start), "at {p_at}");
        let Some(expected) = expected else {
            assert_eq!(
                row.projected_exhaustion, None,
                "at {p_at}: an instant after the period"
            );
            continue;
        };
        assert_near(
            row.projected_exhaustion,
            at(expected),
            &format!("at {p_at}"),
        );
        assert_near(
            row.projected_exhaustion,
            linear_projection(start, 2160, 4000, p_at),
            &format!("at {p_at}, the formula"),
        );
        let got = row.projected_exhaustion.unwrap();
        assert!(
            got > earlier,
            "at {p_at}: {got} is not later than {earlier}"
        );
        earlier = got;
    }
    // December is another period, with no usage yet: nothing to project from November's.
    let december = tokens_row(
        &mut conn,
        "quota_status",
        1,
        "month",
        at("2026-12-01T00:00:00Z"),
    );
    assert_eq!(december.period_start, at("2026-12-01T00:00:00Z"));
    assert_eq!((december.used, december.projected_exhaustion), (0, None));
}

#[test]
fn events_not_yet_aggregated_count_in_the_projection_as_in_used() {
    let db = TestDb::new();
    seed_steady(&db);
    db.execute("UPDATE plan_limits SET max_value = 4000 WHERE plan_id = 1");
    let start = at("2026-11-01T00:00:00Z");
    let mut conn = db.conn();
    // (the state, p_at, the tokens of the events so far): each answer is start + 4000 / used ×
    // (p_at − start), whether `aggregate` has counted the events or not.
    let mut check = |state: &str, p_at: &str, used: i64| {
        let p_at = at(p_at);
        let row = tokens_row(&mut conn, "quota_status", 1, "month", p_at);
        assert_eq!(row.used, used, "{state}: used");
        assert_near(
            row.projected_exhaustion,
            linear_projection(start, used, 4000, p_at),
            &format!("{state}: the projection"),
        );
        assert_eq!(
            row.projected_exhaustion, row.from_row,
            "{state}: not from the row's used"
        );
        row.projected_exhaustion
    };
    // 96 events of 10 tokens up to November 5th, none counted yet; then counted.
    steady(
        &db,
        (1, None),
        10,
        ("2026-11-01T00:00:00Z", "2026-11-05T00:00:00Z"),
        "1 hour",
    );
    let pending = check("nothing aggregated", "2026-11-05T00:00:00Z", 960);
    add_new_events_to_periods(&mut db.conn());
    let counted = check("all aggregated", "2026-11-05T00:00:00Z", 960);
    assert_eq!(pending, counted);
    // 120 more up to November 10th, not counted: the period's total plus those.
    steady(
        &db,
        (1, None),
        10,
        ("2026-11-05T00:00:00Z", "2026-11-10T00:00:00Z"),
        "1 hour",
    );
    let mixed = check("half aggregated", "2026-11-10T00:00:00Z", 2160);
    add_new_events_to_periods(&mut db.conn());
    let counted = check("all aggregated again", "2026-11-10T00:00:00Z", 2160);
    assert_eq!(mixed, counted);
    assert_near(counted, at("2026-11-17T16:00:00Z"), "2160 tokens in 9 days");
}
