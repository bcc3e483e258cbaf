//! `usage_check()`: the pre-flight of `usage_record()`. It takes the same arguments, says
//! whether the event fits every limit it adds to, which limit would stop it, what remains and
//! when it resets, counting every event the caller sees; bad arguments get the errors
//! `usage_record()` gives. The seeds' applications enforce their limits with it and with hard
//! limits, at their real numbers.

use diesel::prelude::*;
use diesel::sql_types::{Bool, Nullable, Numeric, Text, Timestamptz};

use crate::support::outcome::outcome;
use crate::support::{TestDb, count, text};

/// Plan 1 with `limits` ((metric, period, kind, max, enforcement)) and user 1 (UTC) on it.
fn user_on_plan(limits: &[(&str, &str, &str, i64, &str)]) -> TestDb {
    let db = TestDb::new();
    let values: Vec<String> = limits
        .iter()
        .map(|(m, p, k, max, e)| format!("(1, '{m}', '{p}', '{k}', {max}, '{e}')"))
        .collect();
    db.execute(&format!(
        "INSERT INTO plans (id, name) VALUES (1, 'free');
         INSERT INTO plan_limits (plan_id, metric, period, kind, max_value, enforcement)
         VALUES {};
         INSERT INTO users (id, email, plan_id) VALUES (1, 'ada@example.com', 1);",
        values.join(", ")
    ));
    db
}

#[derive(QueryableByName, Debug)]
struct Check {
    #[diesel(sql_type = Bool)]
    fits: bool,
    #[diesel(sql_type = Nullable<Text>)]
    metric: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    period: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    enforcement: Option<String>,
    #[diesel(sql_type = Nullable<Numeric>)]
    remaining: Option<bigdecimal::BigDecimal>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    resets_at: Option<chrono::DateTime<chrono::Utc>>,
}

fn check(db: &TestDb, args: &str) -> Check {
    diesel::sql_query(format!("SELECT * FROM usage_check(p_user_id => 1, {args})"))
        .get_result(&mut db.conn())
        .unwrap_or_else(|e| panic!("usage_check({args}): {e}"))
}

/// `usage_record(p_user_id => 1, …)`: Ok, or `SQLSTATE constraint` of its failure.
fn record(db: &TestDb, args: &str) -> Result<(), String> {
    failure(db, &format!("SELECT usage_record(p_user_id => 1, {args})"))
}

/// Runs `sql`; Err(`SQLSTATE constraint`) when it fails.
fn failure(db: &TestDb, sql: &str) -> Result<(), String> {
    outcome(&mut db.conn(), sql).map_err(|f| f.code())
}

#[test]
fn the_101st_message_of_a_free_month_is_refused() {
    // Seed 001: the free tier stops at 100 messages a month.
    let db = user_on_plan(&[("messages", "month", "", 100, "hard")]);
    let message =
        "p_kind => 'message_sent', p_messages => 1, p_created_at => '2026-11-10T12:00:00Z'";
    for n in 1..=100 {
        record(&db, message).unwrap_or_else(|e| panic!("message {n}: {e}"));
    }
    assert_eq!(record(&db, message), Err("UQ001 ".to_string()));
    let c = check(&db, message);
    assert!(!c.fits);
    assert_eq!(c.metric.as_deref(), Some("messages"));
    assert_eq!(c.remaining.map(|r| r.to_string()), Some("0".into()));
    assert_eq!(db.count("SELECT count(*) AS n FROM usage_events"), 100);
}

#[test]
fn the_21st_image_of_a_day_and_the_101st_of_a_month_are_refused() {
    // Seed 002: 20 images a day and 100 a month.
    let db = user_on_plan(&[
        ("requests", "day", "image_generation", 20, "hard"),
        ("requests", "month", "image_generation", 100, "hard"),
    ]);
    let image = |day: u32| {
        format!("p_kind => 'image_generation', p_created_at => '2026-11-{day:02}T12:00:00Z'")
    };
    for day in 1..=5 {
        for n in 1..=20 {
            record(&db, &image(day)).unwrap_or_else(|e| panic!("day {day} image {n}: {e}"));
        }
        if day == 1 {
            assert_eq!(
                record(&db, &image(1)),
                Err("UQ001 ".into()),
                "the 21st of the day"
            );
            let c = check(&db, &image(1));
            assert_eq!(c.period.as_deref(), Some("day"));
            assert_eq!(
                c.resets_at.map(|r| r.to_rfc3339()),
                Some("2026-11-02T00:00:00+00:00".into())
            );
        }
    }
    // Day 6: the day has room, the month does not.
    assert_eq!(
        record(&db, &image(6)),
        Err("UQ001 ".into()),
        "the 101st of the month"
    );
    let c = check(&db, &image(6));
    assert!(!c.fits);
    assert_eq!(c.period.as_deref(), Some("month"));
    assert_eq!(c.enforcement.as_deref(), Some("hard"));
    assert_eq!(db.count("SELECT count(*) AS n FROM usage_events"), 100);
}

#[test]
fn a_request_is_refused_once_the_free_tokens_are_used_and_what_is_known_afterwards_is_recorded() {
    // Seed 004: free 100,000 tokens a month. The tokens of an answer are known only after
    // the model ran: check with the least a request uses, call the model, record.
    let db = user_on_plan(&[("tokens", "month", "", 100_000, "soft")]);
    let request = "p_kind => 'ai_response', p_tokens => 1, p_created_at => '2026-11-10T12:00:00Z'";
    let answer = |tokens: i64| {
        format!(
            "p_kind => 'ai_response', p_tokens => {tokens}, p_created_at => '2026-11-10T12:00:00Z'"
        )
    };
    record(&db, &answer(99_999)).unwrap();
    let c = check(&db, request);
    assert!(c.fits, "{c:?}");
    assert_eq!(c.remaining.map(|r| r.to_string()), Some("1".into()));
    // The answer took 250 tokens: recorded (the overshoot is at most one answer).
    record(&db, &answer(250)).unwrap();
    let c = check(&db, request);
    assert!(!c.fits, "{c:?}");
    assert_eq!(c.metric.as_deref(), Some("tokens"));
    assert_eq!(c.enforcement.as_deref(), Some("soft"));
    // Usage that adds no tokens is not stopped by the token limit.
    assert!(
        check(
            &db,
            "p_kind => 'message_sent', p_messages => 1, p_created_at => '2026-11-10T12:00:00Z'"
        )
        .fits
    );
}

#[test]
fn an_event_of_a_subject_without_limits_fits_with_nothing_to_report() {
    let db = user_on_plan(&[("tokens", "month", "image_generation", 10, "hard")]);
    let c = check(&db, "p_kind => 'ai_response', p_tokens => 1000000");
    assert!(
        c.fits && c.metric.is_none() && c.remaining.is_none(),
        "{c:?}"
    );
}

/// For every constraint of usage_events, arguments that break only it.
const BREAKING: &[(&str, &str)] = &[
    ("usage_events_bytes_in_range", "p_bytes => 1000000000001"),
    ("usage_events_bytes_not_negative", "p_bytes => -1"),
    (
        "usage_events_completion_tokens_in_range",
        "p_completion_tokens => 1000000000001",
    ),
    (
        "usage_events_completion_tokens_not_negative",
        "p_completion_tokens => -5",
    ),
    ("usage_events_cost_in_range", "p_cost => 1e30"),
    ("usage_events_cost_not_negative", "p_cost => -0.01"),
    (
        "usage_events_created_at_in_range",
        "p_created_at => 'infinity'",
    ),
    ("usage_events_kind_check", "p_kind => 'Bad Kind'"),
    ("usage_events_messages_in_range", "p_messages => 1000001"),
    ("usage_events_messages_not_negative", "p_messages => -1"),
    (
        "usage_events_metadata_size",
        "p_metadata => jsonb_build_object('x', repeat('y', 70000))",
    ),
    ("usage_events_model_check", "p_model => repeat('m', 201)"),
    ("usage_events_org_id_check", "p_org_id => -3"),
    (
        "usage_events_prompt_tokens_in_range",
        "p_prompt_tokens => 1000000000001",
    ),
    (
        "usage_events_prompt_tokens_not_negative",
        "p_prompt_tokens => -1",
    ),
    (
        "usage_events_request_type_check",
        "p_request_type => 'No Way'",
    ),
    (
        "usage_events_tokens_in_range",
        "p_tokens => 9000000000000000000",
    ),
    ("usage_events_tokens_not_negative", "p_tokens => -10"),
];

#[test]
fn bad_arguments_get_the_same_error_from_usage_check_as_from_usage_record() {
    let db = user_on_plan(&[("tokens", "day", "", 1000, "hard")]);
    let mut conn = db.conn();
    // Every CHECK constraint of the table is tried.
    let constraints = text(
        &mut conn,
        "SELECT string_agg(conname, ',' ORDER BY conname) AS t FROM pg_constraint
          WHERE conrelid = 'usage_events'::regclass AND contype = 'c'",
    );
    let tried: Vec<&str> = BREAKING.iter().map(|(c, _)| *c).collect();
    assert_eq!(constraints, tried.join(","));
    for (constraint, args) in BREAKING {
        let kind = if args.contains("p_kind") {
            ""
        } else {
            "p_kind => 'ai_response', "
        };
        let args = format!("{kind}{args}");
        let recorded = record(&db, &args);
        let checked = failure(
            &db,
            &format!("SELECT * FROM usage_check(p_user_id => 1, {args})"),
        );
        assert_eq!(checked, recorded, "{constraint}: {args}");
        let expected = match *constraint {
            // tokens is raised to prompt + completion tokens: -10 becomes 0, a valid event.
            "usage_events_tokens_not_negative" => Ok(()),
            // No organization -3 has members: the membership check refuses it first.
            "usage_events_org_id_check" => Err("23503 usage_record_org_member".to_string()),
            _ => Err(format!("23514 {constraint}")),
        };
        assert_eq!(recorded, expected, "{args}");
    }
    // An organization the user is not a member of, and a NULL kind, likewise.
    for args in ["p_kind => 'ai_response', p_org_id => 9", "p_kind => NULL"] {
        let recorded = record(&db, args);
        assert!(recorded.is_err(), "{args}");
        let checked = failure(
            &db,
            &format!("SELECT * FROM usage_check(p_user_id => 1, {args})"),
        );
        assert_eq!(checked, recorded, "{args}");
    }
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM usage_events").unwrap(),
        1
    );
}
