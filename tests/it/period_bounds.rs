//! `usage_period_bounds`, the one implementation of period arithmetic, checked against
//! chrono-tz: DST days of 23, 25, 23.5 and 24.5 hours, half-hour zones, billing anchors that
//! fall past a month's end, and a property test that consecutive periods tile time.

use std::cell::RefCell;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use usage_worker::subject::Subject;

use crate::support::quota::{add_new_events_to_periods, periods, reference_bounds, sql_bounds};
use crate::support::{TestDb, at};

struct DstDay {
    zone: &'static str,
    day: (i32, u32, u32),
    start: &'static str,
    end: &'static str,
    hours: f64,
}

const DST_DAYS: &[DstDay] = &[
    DstDay {
        zone: "Europe/Berlin",
        day: (2025, 3, 30),
        start: "2025-03-29T23:00:00Z",
        end: "2025-03-30T22:00:00Z",
        hours: 23.0,
    },
    DstDay {
        zone: "Europe/Berlin",
        day: (2025, 10, 26),
        start: "2025-10-25T22:00:00Z",
        end: "2025-10-26T23:00:00Z",
        hours: 25.0,
    },
    DstDay {
        zone: "America/New_York",
        day: (2025, 3, 9),
        start: "2025-03-09T05:00:00Z",
        end: "2025-03-10T04:00:00Z",
        hours: 23.0,
    },
    DstDay {
        zone: "America/New_York",
        day: (2025, 11, 2),
        start: "2025-11-02T04:00:00Z",
        end: "2025-11-03T05:00:00Z",
        hours: 25.0,
    },
    DstDay {
        zone: "Asia/Kolkata",
        day: (2025, 6, 15),
        start: "2025-06-14T18:30:00Z",
        end: "2025-06-15T18:30:00Z",
        hours: 24.0,
    },
    DstDay {
        zone: "Australia/Lord_Howe",
        day: (2025, 4, 6),
        start: "2025-04-05T13:00:00Z",
        end: "2025-04-06T13:30:00Z",
        hours: 24.5,
    },
    DstDay {
        zone: "Australia/Lord_Howe",
        day: (2025, 10, 5),
        start: "2025-10-04T13:30:00Z",
        end: "2025-10-05T13:00:00Z",
        hours: 23.5,
    },
];

fn local(zone: Tz, day: (i32, u32, u32), h: u32, m: u32) -> DateTime<Utc> {
    zone.with_ymd_and_hms(day.0, day.1, day.2, h, m, 0)
        .single()
        .unwrap()
        .with_timezone(&Utc)
}

#[test]
fn daily_periods_run_from_local_midnight_to_local_midnight_across_dst_changes() {
    let db = TestDb::new();
    let mut conn = db.conn();
    for case in DST_DAYS {
        let zone: Tz = case.zone.parse().unwrap();
        let expected = crate::support::quota::Bounds {
            period_start: at(case.start),
            period_end: at(case.end),
        };
        for (h, m) in [(0, 0), (12, 0), (23, 30), (23, 59)] {
            let instant = local(zone, case.day, h, m);
            let bounds = sql_bounds(&mut conn, case.zone, None, "day", instant);
            assert_eq!(
                bounds, expected,
                "{} {:?} {h:02}:{m:02}",
                case.zone, case.day
            );
            assert_eq!(
                bounds,
                reference_bounds(zone, None, "day", instant),
                "chrono-tz disagrees for {}",
                case.zone
            );
        }
        let length = (expected.period_end - expected.period_start).num_minutes() as f64 / 60.0;
        assert_eq!(length, case.hours, "{} {:?}", case.zone, case.day);
    }
}

#[test]
fn an_event_at_half_past_eleven_local_time_lands_in_that_local_day() {
    let db = TestDb::new();
    for (i, case) in DST_DAYS.iter().enumerate() {
        let zone: Tz = case.zone.parse().unwrap();
        let user = i as i64 + 1;
        db.add_user(user, case.zone);
        db.execute(&format!(
            "INSERT INTO usage_events (user_id, kind, tokens, created_at) VALUES ({user}, 'ai_response', 10, '{}')",
            local(zone, case.day, 23, 30).to_rfc3339()
        ));
    }
    let mut conn = db.conn();
    add_new_events_to_periods(&mut conn);
    for (i, case) in DST_DAYS.iter().enumerate() {
        let days = periods(&mut conn, Subject::User(i as i64 + 1), "day");
        assert_eq!(days.len(), 1, "{}", case.zone);
        assert_eq!(
            (days[0].period_start, days[0].period_end),
            (at(case.start), at(case.end)),
            "{}",
            case.zone
        );
        assert_eq!(days[0].tokens, 10);
    }
}

/// A monthly period to check: zone, anchor day, an instant, and the expected [start, end).
type MonthCase = (&'static str, Option<i32>, &'static str, [&'static str; 2]);

/// The monthly period holding each case's instant is the expected one, and chrono-tz agrees.
fn assert_months(cases: &[MonthCase]) {
    let db = TestDb::new();
    let mut conn = db.conn();
    for &(zone, anchor, instant, [start, end]) in cases {
        let case = format!("{zone}, anchor {anchor:?}, at {instant}");
        let b = sql_bounds(&mut conn, zone, anchor, "month", at(instant));
        let tz: Tz = zone.parse().unwrap();
        assert_eq!(
            b,
            reference_bounds(tz, anchor.map(|a| a as u32), "month", at(instant)),
            "chrono-tz disagrees: {case}"
        );
        assert_eq!(
            (b.period_start, b.period_end),
            (at(start), at(end)),
            "{case}"
        );
    }
}

#[test]
fn anchor_day_31_clamps_to_the_last_day_of_february_in_common_and_leap_years() {
    assert_months(&[
        (
            "UTC",
            Some(31),
            "2027-02-15T12:00:00Z",
            ["2027-01-31T00:00:00Z", "2027-02-28T00:00:00Z"],
        ),
        (
            "UTC",
            Some(31),
            "2027-02-28T00:00:00Z",
            ["2027-02-28T00:00:00Z", "2027-03-31T00:00:00Z"],
        ),
        (
            "UTC",
            Some(31),
            "2027-03-30T23:59:59Z",
            ["2027-02-28T00:00:00Z", "2027-03-31T00:00:00Z"],
        ),
        (
            "UTC",
            Some(31),
            "2028-02-28T12:00:00Z",
            ["2028-01-31T00:00:00Z", "2028-02-29T00:00:00Z"],
        ),
        (
            "UTC",
            Some(31),
            "2028-02-29T12:00:00Z",
            ["2028-02-29T00:00:00Z", "2028-03-31T00:00:00Z"],
        ),
        (
            "UTC",
            Some(31),
            "2027-05-01T00:00:00Z",
            ["2027-04-30T00:00:00Z", "2027-05-31T00:00:00Z"],
        ),
        // In the user's zone: Kolkata's 2028-02-29 00:00 is 2028-02-28 18:30 UTC.
        (
            "Asia/Kolkata",
            Some(31),
            "2028-02-28T18:30:00Z",
            ["2028-02-28T18:30:00Z", "2028-03-30T18:30:00Z"],
        ),
        (
            "Asia/Kolkata",
            Some(31),
            "2028-02-28T18:29:59Z",
            ["2028-01-30T18:30:00Z", "2028-02-28T18:30:00Z"],
        ),
    ]);
}

#[test]
fn anchor_day_15_and_calendar_months_start_at_local_midnight() {
    assert_months(&[
        (
            "UTC",
            Some(15),
            "2027-02-14T23:59:59Z",
            ["2027-01-15T00:00:00Z", "2027-02-15T00:00:00Z"],
        ),
        (
            "UTC",
            Some(15),
            "2027-02-15T00:00:00Z",
            ["2027-02-15T00:00:00Z", "2027-03-15T00:00:00Z"],
        ),
        // Berlin: the period holding the switch to summer time ends an hour earlier in UTC.
        (
            "Europe/Berlin",
            Some(15),
            "2027-03-14T23:30:00Z",
            ["2027-03-14T23:00:00Z", "2027-04-14T22:00:00Z"],
        ),
        (
            "Europe/Berlin",
            None,
            "2026-11-30T23:30:00Z",
            ["2026-11-30T23:00:00Z", "2026-12-31T23:00:00Z"],
        ),
        (
            "America/New_York",
            None,
            "2026-12-01T04:59:59Z",
            ["2026-11-01T04:00:00Z", "2026-12-01T05:00:00Z"],
        ),
    ]);
}

#[test]
fn an_unknown_time_zone_is_treated_as_utc_instead_of_failing() {
    let db = TestDb::new();
    let mut c = db.conn();
    let utc = sql_bounds(&mut c, "UTC", None, "day", at("2026-11-23T10:00:00Z"));
    for bad in ["Mars/Olympus_Mons", "", "Europe/Berlinn"] {
        assert_eq!(
            sql_bounds(&mut c, bad, None, "day", at("2026-11-23T10:00:00Z")),
            utc,
            "{bad:?}"
        );
    }
    // Checking a zone opens a subtransaction, which a parallel worker cannot: statements
    // planned in parallel (large batches) must still work.
    use diesel::connection::SimpleConnection;
    c.batch_execute(
        "SET force_parallel_mode = on;
         SELECT count(*) FROM generate_series(1, 1000) AS g,
                usage_period_bounds(CASE WHEN g % 2 = 0 THEN 'Mars/Olympus_Mons' ELSE 'Asia/Kolkata' END,
                                    NULL, 'month', now());
         SELECT count(*) FROM generate_series(1, 1000) AS g
          WHERE usage_timezone_is_valid(CASE WHEN g % 2 = 0 THEN 'Mars/Olympus_Mons' ELSE 'UTC' END);",
    )
    .unwrap();
}

const ZONES: &[&str] = &[
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "America/Havana",
    "America/Santiago",
    "America/Sao_Paulo",
    "Asia/Kathmandu",
    "Pacific/Chatham",
    "America/St_Johns",
    "Australia/Adelaide",
    "Europe/London",
    "Africa/Casablanca",
    "Asia/Tehran",
];

#[test]
fn consecutive_periods_tile_time_for_random_zones_anchors_and_instants() {
    let db = TestDb::new();
    let conn = RefCell::new(db.conn());
    // 2000-01-01 .. 2040-01-01
    let instants = 946_684_800i64..2_208_988_800i64;
    let strategy = (
        0..ZONES.len(),
        prop_oneof![Just(None), (1i32..=31).prop_map(Some)],
        prop_oneof![Just("day"), Just("month")],
        instants,
    );
    let mut runner = TestRunner::new(Config {
        cases: 400,
        ..Config::default()
    });
    runner
        .run(&strategy, |(zone, anchor, period, secs)| {
            let conn = &mut *conn.borrow_mut();
            let zone_name = ZONES[zone];
            let tz: Tz = zone_name.parse().unwrap();
            let instant = Utc.timestamp_opt(secs, 0).unwrap();
            let this = sql_bounds(conn, zone_name, anchor, period, instant);
            prop_assert!(
                this.period_start <= instant && instant < this.period_end,
                "{this:?} does not contain {instant}"
            );
            prop_assert_eq!(
                this,
                reference_bounds(tz, anchor.map(|a| a as u32), period, instant)
            );
            let next = sql_bounds(conn, zone_name, anchor, period, this.period_end);
            prop_assert_eq!(
                next.period_start,
                this.period_end,
                "gap or overlap after {:?}",
                this
            );
            let last_instant = this.period_end - Duration::microseconds(1);
            prop_assert_eq!(
                sql_bounds(conn, zone_name, anchor, period, last_instant),
                this
            );
            prop_assert_eq!(
                sql_bounds(conn, zone_name, anchor, period, this.period_start),
                this
            );
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_day_skipped_at_midnight_starts_when_the_clock_jumps() {
    // Havana moved clocks from 00:00 to 01:00 on 2011-03-13, and back from 01:00 to 00:00 on
    // 2011-11-06, so those days start at the change and at the first of two midnights.
    let db = TestDb::new();
    let mut c = db.conn();
    let tz: Tz = "America/Havana".parse().unwrap();
    for day in [
        NaiveDate::from_ymd_opt(2011, 3, 13).unwrap(),
        NaiveDate::from_ymd_opt(2011, 11, 6).unwrap(),
    ] {
        let noon = tz
            .from_local_datetime(&day.and_hms_opt(12, 0, 0).unwrap())
            .unwrap()
            .with_timezone(&Utc);
        let b = sql_bounds(&mut c, "America/Havana", None, "day", noon);
        assert_eq!(b, reference_bounds(tz, None, "day", noon), "{day}");
    }
    assert_eq!(
        sql_bounds(
            &mut c,
            "America/Havana",
            None,
            "day",
            at("2011-11-06T12:00:00Z")
        )
        .period_start,
        at("2011-11-06T04:00:00Z")
    );
}
