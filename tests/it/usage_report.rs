//! What applications and operators read of a subject's quota: `quota_status()` /
//! `org_quota_status()` in SQL, and `--usage` (a bar per limit, the reset instant in the
//! subject's zone, JSON for scripts; an organization's top members).

use bigdecimal::BigDecimal;
use chrono::{Datelike, Months, NaiveDate, TimeZone};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Timestamptz};
use usage_worker::quota_report::QuotaRow;
use usage_worker::subject::Subject;

use crate::support::clock::db_now;
use crate::support::quota::{add_new_events_to_periods, month_tokens, spend};
use crate::support::{self, TestDb, at, binary, output};

/// The subject's quota status at `instant`, as `--usage` reads it (the display offset, unused
/// here, as 0): `quota_status()` of a user, `org_quota_status()` of an organization.
fn quota_status(db: &TestDb, subject: Subject, instant: &str) -> Vec<QuotaRow> {
    let (function, id) = match subject {
        Subject::User(id) => ("quota_status", id),
        Subject::Org(id) => ("org_quota_status", id),
    };
    diesel::sql_query(format!(
        "SELECT q.*, 0 AS period_end_utc_offset, 0 AS projected_utc_offset FROM {function}($1, $2) q"
    ))
    .bind::<BigInt, _>(id)
    .bind::<Timestamptz, _>(at(instant))
    .load(&mut db.conn())
    .unwrap()
}

fn find<'a>(rows: &'a [QuotaRow], metric: &str, period: &str, kind: &str) -> &'a QuotaRow {
    rows.iter()
        .find(|r| r.metric == metric && r.period == period && r.kind == kind)
        .unwrap_or_else(|| panic!("no {metric}/{period}/{kind:?} row in {rows:?}"))
}

fn num(n: i64) -> BigDecimal {
    BigDecimal::from(n)
}

fn used_limit_remaining(row: &QuotaRow) -> (BigDecimal, Option<BigDecimal>, Option<BigDecimal>) {
    (
        row.used.clone(),
        row.limit_value.clone(),
        row.remaining.clone(),
    )
}

/// User 1, or organization 1 whose usage member 9 spends: the subjects of these tests.
const SUBJECTS: [Subject; 2] = [Subject::User(1), Subject::Org(1)];

/// A database with member 9 and `subject` in `zone` on `plan` (or none).
fn with_subject(subject: Subject, zone: &str, plan: Option<i64>) -> TestDb {
    let db = TestDb::new();
    db.add_user(9, "UTC");
    db.add_subject(subject, zone, None, plan);
    if let Subject::Org(org) = subject {
        db.add_member(org, 9, "member");
    }
    db
}

#[test]
fn quota_status_of_a_subject_without_events_shows_zero_usage_and_the_periods_in_its_zone() {
    for subject in SUBJECTS {
        let db = with_subject(subject, "America/New_York", None);
        let rows = quota_status(&db, subject, "2026-11-23T03:00:00Z"); // 22:00 on Nov 22 in New York
        assert_eq!(rows.len(), 10, "{subject}"); // five metrics, day and month, over all kinds
        for row in &rows {
            assert_eq!(row.used, num(0));
            assert!(
                row.unlimited
                    && !row.exceeded
                    && row.limit_value.is_none()
                    && row.remaining.is_none()
            );
        }
        let day = find(&rows, "tokens", "day", "");
        assert_eq!(
            (day.period_start, day.period_end),
            (at("2026-11-22T05:00:00Z"), at("2026-11-23T05:00:00Z"))
        );
        let month = find(&rows, "tokens", "month", "");
        assert_eq!(
            (month.period_start, month.period_end),
            (at("2026-11-01T04:00:00Z"), at("2026-12-01T05:00:00Z"))
        );
        let unknown = match subject {
            Subject::User(_) => Subject::User(12345),
            Subject::Org(_) => Subject::Org(12345),
        };
        assert!(quota_status(&db, unknown, "2026-11-23T03:00:00Z").is_empty());
    }
}

#[test]
fn quota_status_reports_limits_remaining_and_unlimited_metrics_and_follows_a_plan_change_at_once() {
    for subject in SUBJECTS {
        let db = with_subject(subject, "UTC", None);
        db.execute(&format!(
            "INSERT INTO plans (id, name) VALUES (1, 'free'), (2, 'pro');
             INSERT INTO plan_limits (plan_id, metric, period, kind, max_value)
             VALUES (1, 'tokens', 'month', '', 1000), (2, 'tokens', 'month', '', 100000);
             UPDATE {} SET plan_id = 1 WHERE id = 1",
            subject.table()
        ));
        spend(&db, subject, 9, "ai_response", 710, "2026-11-20T10:00:00Z");
        add_new_events_to_periods(&mut db.conn());

        let rows = quota_status(&db, subject, "2026-11-23T12:00:00Z");
        let tokens = find(&rows, "tokens", "month", "");
        assert_eq!(
            used_limit_remaining(tokens),
            (num(710), Some(num(1000)), Some(num(290))),
            "{subject}"
        );
        assert!(!tokens.unlimited && !tokens.exceeded);
        assert_eq!(tokens.percent, Some("71.00".parse().unwrap()));
        let messages = find(&rows, "messages", "month", "");
        assert!(messages.unlimited && messages.percent.is_none());
        // Today has no events: the daily row is zero, the monthly one counts the 20th.
        assert_eq!(find(&rows, "tokens", "day", "").used, num(0));

        db.execute(&format!(
            "UPDATE {} SET plan_id = 2 WHERE id = 1",
            subject.table()
        ));
        let rows = quota_status(&db, subject, "2026-11-23T12:00:00Z");
        assert_eq!(
            find(&rows, "tokens", "month", "").remaining,
            Some(num(99290))
        );
    }
}

#[test]
fn quota_status_checks_a_kind_scoped_limit_against_that_kind_only() {
    for subject in SUBJECTS {
        let db = with_subject(subject, "Asia/Kolkata", None);
        db.execute(&format!(
            "INSERT INTO plans (id, name) VALUES (1, 'free');
             INSERT INTO plan_limits (plan_id, metric, period, kind, max_value)
             VALUES (1, 'requests', 'day', 'image_generation', 2);
             UPDATE {} SET plan_id = 1 WHERE id = 1",
            subject.table()
        ));
        for _ in 0..3 {
            spend(
                &db,
                subject,
                9,
                "image_generation",
                0,
                "2026-11-23T05:00:00Z",
            );
        }
        for _ in 0..5 {
            spend(&db, subject, 9, "ai_response", 10, "2026-11-23T05:00:00Z");
        }
        add_new_events_to_periods(&mut db.conn());

        let rows = quota_status(&db, subject, "2026-11-23T06:00:00Z");
        assert_eq!(rows.len(), 11, "{subject}");
        let images = find(&rows, "requests", "day", "image_generation");
        assert_eq!(
            used_limit_remaining(images),
            (num(3), Some(num(2)), Some(num(0)))
        );
        assert!(images.exceeded);
        assert_eq!(images.percent, Some("150.00".parse().unwrap()));
        assert_eq!(
            (images.period_start, images.period_end),
            (at("2026-11-22T18:30:00Z"), at("2026-11-23T18:30:00Z"))
        );
        let all = find(&rows, "requests", "day", "");
        assert_eq!(all.used, num(8));
        assert!(all.unlimited && !all.exceeded);
    }
}

/// Organization 7 "Acme" in Kolkata on a plan of 100,000 tokens a month, with an owner, an
/// admin and a member living in other zones; 71,234 tokens used this month, by the owner and
/// the admin. The member's usage is personal, so it is not the organization's. The books are
/// written as aggregation leaves them, so the tests read what the CLI shows.
fn acme_with_usage_this_month(db: &TestDb) {
    db.execute(
        "INSERT INTO plans (id, name) VALUES (1, 'team');
         INSERT INTO plan_limits (plan_id, metric, period, kind, max_value)
         VALUES (1, 'tokens', 'month', '', 100000)",
    );
    db.add_organization(7, "Acme", "Asia/Kolkata", None, Some(1));
    for (user, zone, role) in [
        (1, "America/New_York", "owner"),
        (2, "Europe/Berlin", "admin"),
        (3, "UTC", "member"),
    ] {
        db.add_user(user, zone);
        db.add_member(7, user, role);
    }
    db.execute(
        "UPDATE users SET name = 'Member ' || id;
         INSERT INTO usage_periods (user_id, org_id, period, period_start, period_end, tokens)
         SELECT 0, 7, 'month', b.period_start, b.period_end, 71234
           FROM usage_period_bounds('Asia/Kolkata', NULL, 'month', now()) b;
         INSERT INTO token_usage_daily (user_id, day, kind, request_type, model, events, tokens,
                                        messages, cost, org_id)
         SELECT t.user_id, (now() AT TIME ZONE 'Asia/Kolkata')::date, 'ai_response', '', '',
                t.events, t.tokens, 0, t.cost, t.org_id
           FROM (VALUES (1, 2, 1234, 0.5, 7), (2, 5, 70000, 2.25, 7), (3, 9, 999999, 9, NULL))
                AS t (user_id, events, tokens, cost, org_id)",
    );
}

/// `subject` on a plan of 100,000 tokens a month with 71,234 used in its current month: user
/// 42 on plan `free` in Berlin, whose event of now is aggregated, or Acme (organization 7, plan
/// `team`). Its plan's name, its zone and its heading in the `--usage` table.
fn with_usage_this_month(db: &TestDb, subject: Subject) -> (&'static str, &'static str, String) {
    match subject {
        Subject::User(id) => {
            db.execute(&format!(
                "INSERT INTO plans (id, name) VALUES (1, 'free');
                 INSERT INTO plan_limits (plan_id, metric, period, kind, max_value)
                 VALUES (1, 'tokens', 'month', '', 100000);
                 INSERT INTO users (id, email, timezone, plan_id)
                 VALUES ({id}, 'u{id}@example.com', 'Europe/Berlin', 1);
                 INSERT INTO usage_events (user_id, kind, tokens) VALUES ({id}, 'ai_response', 71234);"
            ));
            add_new_events_to_periods(&mut db.conn());
            ("free", "Europe/Berlin", format!("user {id}"))
        }
        Subject::Org(_) => {
            acme_with_usage_this_month(db);
            (
                "team",
                "Asia/Kolkata",
                "organization 7 \"Acme\"".to_string(),
            )
        }
    }
}

/// `--usage` of `subject`, with `extra` arguments.
fn usage(db: &TestDb, subject: Subject, extra: &[&str]) -> String {
    let mut command = db.binary();
    match subject {
        Subject::User(id) => command.args(["--usage".to_string(), id.to_string()]),
        Subject::Org(id) => command.args(["--usage", "--org", &id.to_string()]),
    };
    support::stdout_of_success(command.args(extra))
}

#[test]
fn usage_shows_a_bar_per_limit_with_the_reset_instant_in_the_subjects_zone_and_json_for_scripts() {
    for subject in [Subject::User(42), Subject::Org(7)] {
        let db = TestDb::new();
        let (plan, zone, heading) = with_usage_this_month(&db, subject);
        let tz: chrono_tz::Tz = zone.parse().unwrap();
        let today = db_now(&db).with_timezone(&tz).date_naive();
        let next_month =
            NaiveDate::from_ymd_opt(today.year(), today.month(), 1).unwrap() + Months::new(1);
        let resets = tz
            .from_local_datetime(&next_month.and_hms_opt(0, 0, 0).unwrap())
            .unwrap();

        let table = usage(&db, subject, &[]);
        let head = format!("{heading}  plan {plan}  zone {zone}  at ");
        assert!(table.starts_with(&head), "{table}");
        let line = table
            .lines()
            .find(|l| l.starts_with("tokens/month"))
            .unwrap_or_else(|| panic!("{table}"));
        assert!(
            line.contains("██████████████░░░░░░") && line.contains("71%"),
            "{line}"
        );
        assert!(line.contains("71,234 / 100,000"), "{line}");
        let reset_text = format!("resets {} {zone}", resets.format("%Y-%m-%d 00:00"));
        assert!(line.contains(&reset_text), "{line}");
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("messages/day") && l.contains("unlimited")),
            "{table}"
        );

        let json: serde_json::Value =
            serde_json::from_str(&usage(&db, subject, &["--json"])).unwrap();
        let (key, id) = subject.report_key();
        assert_eq!((&json[key], &json["zone_used"]), (&id.into(), &zone.into()));
        let tokens = month_tokens(&json);
        assert_eq!(tokens["used"], 71234);
        assert_eq!(tokens["limit_value"], 100000);
        assert_eq!(tokens["remaining"], 28766);
        assert_eq!(tokens["resets_local"], resets.to_rfc3339());
        if let Subject::Org(_) = subject {
            assert!(table.lines().next().unwrap().ends_with(" IST"), "{table}");
            assert_eq!(json["name"], "Acme");
            assert_top_members_masked(&table, &json);
        }
    }
}

/// An organization's `--usage` lists its members' usage in it (on its days), largest first,
/// their addresses masked; a member's personal usage is not listed.
fn assert_top_members_masked(table: &str, json: &serde_json::Value) {
    let members: Vec<&str> = table
        .lines()
        .skip_while(|l| !l.starts_with("top members "))
        .collect();
    assert!(
        members[0].ends_with("(Asia/Kolkata days), by tokens:"),
        "{table}"
    );
    assert!(
        members[2].contains("admin") && members[2].contains("70,000"),
        "{table}"
    );
    assert!(
        members[3].contains("owner") && members[3].contains("1,234"),
        "{table}"
    );
    assert!(members[3].contains("Member 1") && members[3].contains("u***@example.com"));
    assert_eq!(
        members.len(),
        4,
        "the member's personal usage is listed: {table}"
    );
    assert!(!table.contains("user1@"), "{table}");

    let top = &json["top_members"];
    assert_eq!(top["members"][0]["user_id"], 2);
    assert_eq!(top["members"][0]["role"], "admin");
    assert_eq!(top["members"][0]["email"], "u***@example.com");
    assert_eq!(top["members"][1]["cost"], 0.5);
    assert_eq!(top["more"], 0);
}

#[test]
fn usage_of_an_unknown_subject_or_of_both_or_neither_subjects_is_a_usage_error() {
    let db = TestDb::new();
    for (subject, args) in [
        (Subject::User(7), &["--usage", "7"][..]),
        (Subject::Org(404), &["--usage", "--org", "404"]),
    ] {
        let unknown = support::output_of(db.binary().args(args));
        assert_eq!(unknown.code, 2, "{}", unknown.stderr);
        assert!(
            unknown.stderr.contains(&subject.not_found("--usage")),
            "{}",
            unknown.stderr
        );
    }

    for (args, expected) in [
        (&["--usage", "42", "--org", "7"][..], "--usage --org 7"),
        (&["--usage"], "needs a user id"),
    ] {
        let mut command = binary();
        command.args(args);
        let refused = output(command);
        assert_eq!(refused.code, 2, "{args:?}: {}", refused.stderr);
        assert!(refused.stderr.contains(expected), "{}", refused.stderr);
    }
}

#[test]
fn a_member_that_left_is_still_listed_by_usage_without_a_role() {
    let db = TestDb::new();
    acme_with_usage_this_month(&db);
    db.execute("DELETE FROM organization_members WHERE user_id = 2");
    let json: serde_json::Value =
        serde_json::from_str(&usage(&db, Subject::Org(7), &["--json"])).unwrap();
    let top = &json["top_members"]["members"];
    assert_eq!(
        (&top[0]["user_id"], &top[0]["role"]),
        (&2.into(), &serde_json::Value::Null)
    );
}
