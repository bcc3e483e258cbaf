//! Demonstrations on this schema: the demo data set (`--demo`), and the organization usage
//! example of a Supabase usage tracker as plain SQL: members record message and reasoning
//! usage for their organization with `usage_record()`, `aggregate` counts it, and the
//! organization reads its counts per day, ISO week, month and year (`org_usage_summary`), a
//! usage summary of the month, who used what (`org_usage_by_member`) and the detailed records.
//! Messages are `messages`, reasoning units are `tokens`. The organization counts in Berlin;
//! its members live in Los Angeles and Tokyo, and the days are the organization's.

use chrono::NaiveDate;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Date, Text};
use usage_worker::demo;
use usage_worker::jobs::{JobKind, RunOpts};

use crate::support::{self, TestDb, at};

/// `org_usage.add_message(n)` by `user` at `created_at`.
fn add_message(db: &TestDb, user: i64, n: i64, created_at: &str) {
    db.execute(&format!(
        "SELECT usage_record(p_user_id => {user}, p_kind => 'message_sent', p_messages => {n},
                             p_org_id => 7, p_created_at => '{created_at}')"
    ));
}

/// `org_usage.add_reasoning(n)` by `user` at `created_at`.
fn add_reasoning(db: &TestDb, user: i64, n: i64, created_at: &str) {
    db.execute(&format!(
        "SELECT usage_record(p_user_id => {user}, p_kind => 'reasoning', p_tokens => {n},
                             p_org_id => 7, p_created_at => '{created_at}')"
    ));
}

#[derive(QueryableByName, Debug, PartialEq)]
struct Counts {
    #[diesel(sql_type = Date)]
    period_start: NaiveDate,
    #[diesel(sql_type = BigInt)]
    messages: i64,
    #[diesel(sql_type = BigInt)]
    reasoning: i64,
}

/// Message and reasoning counts of organization 7 per `granularity` over its days `from..=to`.
fn counts(db: &TestDb, granularity: &str, from: &str, to: &str) -> Vec<(String, i64, i64)> {
    diesel::sql_query(
        "SELECT period_start, messages, tokens AS reasoning
           FROM org_usage_summary(7, $1, $2::date, $3::date)",
    )
    .bind::<Text, _>(granularity)
    .bind::<Text, _>(from)
    .bind::<Text, _>(to)
    .load::<Counts>(&mut db.conn())
    .unwrap()
    .into_iter()
    .map(|c| (c.period_start.to_string(), c.messages, c.reasoning))
    .collect()
}

fn row(start: &str, messages: i64, reasoning: i64) -> (String, i64, i64) {
    (start.to_string(), messages, reasoning)
}

#[test]
fn an_organization_reads_its_message_and_reasoning_counts_by_day_week_month_and_year() {
    let db = TestDb::alone();
    db.execute(
        "INSERT INTO organizations (id, name, timezone) VALUES (7, 'Acme', 'Europe/Berlin')",
    );
    db.add_user(1, "America/Los_Angeles");
    db.add_user(2, "Asia/Tokyo");
    db.add_member(7, 1, "owner");
    db.add_member(7, 2, "member");

    // Tuesday 10 March 2026 in Berlin (UTC+1).
    add_message(&db, 1, 1, "2026-03-10T09:00:00+01:00");
    add_message(&db, 2, 5, "2026-03-10T09:05:00+01:00");
    add_reasoning(&db, 1, 2, "2026-03-10T09:10:00+01:00");
    // Late on Monday in Berlin (already Tuesday in Tokyo): the same ISO week.
    add_message(&db, 2, 3, "2026-03-09T23:30:00+01:00");
    // Sunday: the week before, the same month.
    add_reasoning(&db, 1, 4, "2026-03-08T12:00:00+01:00");
    // New Year in Berlin while it is still 31 December in Los Angeles: counted in 2026.
    add_message(&db, 1, 10, "2026-01-01T00:30:00+01:00");
    add_reasoning(&db, 1, 7, "2025-12-31T23:00:00+01:00");
    // Personal usage of a member is not the organization's.
    db.execute(
        "SELECT usage_record(p_user_id => 1, p_kind => 'message_sent', p_messages => 100,
                             p_created_at => '2026-03-10T10:00:00+01:00')",
    );

    JobKind::Aggregate
        .run(
            &db.ctx(),
            &mut db.conn(),
            at("2026-03-10T12:00:00Z"),
            &RunOpts::default(),
        )
        .unwrap();

    // get_message_count / get_reasoning_count for the day, week, month and year of 10 March.
    assert_eq!(
        counts(&db, "day", "2026-03-10", "2026-03-10"),
        [row("2026-03-10", 6, 2)]
    );
    assert_eq!(
        counts(&db, "week", "2026-03-09", "2026-03-15"),
        [row("2026-03-09", 9, 2)]
    );
    assert_eq!(
        counts(&db, "month", "2026-03-01", "2026-03-31"),
        [row("2026-03-01", 9, 6)]
    );
    assert_eq!(
        counts(&db, "year", "2025-01-01", "2026-12-31"),
        [row("2025-01-01", 0, 7), row("2026-01-01", 19, 6)]
    );
    // The day granularity over a range: one row per day with usage.
    assert_eq!(
        counts(&db, "day", "2026-03-08", "2026-03-10"),
        [
            row("2026-03-08", 0, 4),
            row("2026-03-09", 3, 0),
            row("2026-03-10", 6, 2)
        ]
    );

    assert_month_summary_and_members(&db);
}

/// get_usage_summary('month') of March: {'message': 9, 'reasoning': 6}, who used what, and
/// the recorded events; a member's personal usage stays in their own summary.
fn assert_month_summary_and_members(db: &TestDb) {
    #[derive(QueryableByName, Debug, PartialEq)]
    struct Summary {
        #[diesel(sql_type = BigInt)]
        message: i64,
        #[diesel(sql_type = BigInt)]
        reasoning: i64,
    }
    let month: Summary = diesel::sql_query(
        "SELECT messages AS message, tokens AS reasoning
           FROM org_usage_summary(7, 'month', '2026-03-01', '2026-03-31')",
    )
    .get_result(&mut db.conn())
    .unwrap();
    assert_eq!(
        month,
        Summary {
            message: 9,
            reasoning: 6
        }
    );
    #[derive(QueryableByName, Debug, PartialEq)]
    struct Member {
        #[diesel(sql_type = BigInt)]
        user_id: i64,
        #[diesel(sql_type = BigInt)]
        messages: i64,
        #[diesel(sql_type = BigInt)]
        tokens: i64,
    }
    let members: Vec<Member> = diesel::sql_query(
        "SELECT user_id, messages, tokens FROM org_usage_by_member(7, '2026-03-01', '2026-03-31')",
    )
    .load(&mut db.conn())
    .unwrap();
    let by_member: Vec<(i64, i64, i64)> = members
        .iter()
        .map(|m| (m.user_id, m.messages, m.tokens))
        .collect();
    assert_eq!(by_member, [(1, 1, 6), (2, 8, 0)]);

    // The member's personal message stays in their own summary.
    assert_eq!(
        db.count("SELECT messages AS n FROM usage_summary(1, 'day', '2026-03-10', '2026-03-10')"),
        100
    );
    // get_usage_details('message', ...): the organization's recorded events themselves.
    assert_eq!(
        db.count(
            "SELECT count(*) AS n FROM usage_events
              WHERE org_id = 7 AND kind = 'message_sent'
                AND created_at >= '2026-03-01T00:00:00+01:00' AND created_at < '2026-04-01T00:00:00+02:00'"
        ),
        3
    );
}

#[test]
fn demo_data_has_three_organizations_in_zones_of_their_own_with_every_role_and_shared_usage() {
    let db = TestDb::new();
    assert!(demo::load_demo_data(&mut db.conn()).unwrap());
    let count = |sql: &str| db.count(sql);
    assert_eq!(
        count(
            "SELECT count(DISTINCT timezone) AS n FROM organizations o
              WHERE o.plan_id IS NOT NULL"
        ),
        3
    );
    for role in ["owner", "admin", "member"] {
        assert_eq!(
            count(&format!(
                "SELECT count(DISTINCT org_id) AS n FROM organization_members WHERE role = '{role}'"
            )),
            3,
            "{role}"
        );
    }
    assert!(
        count(
            "SELECT count(DISTINCT u.timezone) AS n FROM organization_members m
               JOIN users u ON u.id = m.user_id WHERE m.org_id = 1"
        ) >= 5
    );
    assert!(
        count(
            "SELECT count(*) AS n FROM organization_members GROUP BY user_id ORDER BY 1 DESC LIMIT 1"
        ) > 1,
        "no user is in two organizations"
    );
    for org in 1..=3 {
        assert!(
            count(&format!(
                "SELECT count(*) AS n FROM usage_events WHERE org_id = {org}"
            )) > 100,
            "organization {org} has no usage"
        );
    }
    // Members spend some usage personally; everyone else only personally.
    assert!(
        count(
            "SELECT count(*) AS n FROM usage_events e
               JOIN organization_members m ON m.user_id = e.user_id WHERE e.org_id IS NULL"
        ) > 100
    );
    // Acme's shared monthly token limit is past 80 % in its current month (its zone), so the
    // alerts job has an organization to warn.
    assert_eq!(
        count(
            "SELECT (sum(e.tokens) * 100 >= 80 * min(l.max_value))::int::bigint AS n
               FROM organizations o
               JOIN plan_limits l ON l.plan_id = o.plan_id AND l.metric = 'tokens' AND l.period = 'month'
               CROSS JOIN LATERAL usage_period_bounds(o.timezone, o.billing_anchor_day, 'month', now()) b
               JOIN usage_events e ON e.org_id = o.id AND e.created_at >= b.period_start
                                  AND e.created_at < b.period_end
              WHERE o.id = 1"
        ),
        1
    );

    support::stdout_of_success(
        db.binary()
            .args(["--run", "all"])
            .env("USAGE_WORKER__MAIL__TRANSPORT", "log"),
    );
    let acme = support::stdout_of_success(db.binary().args(["--usage", "--org", "1"]));
    assert!(
        acme.starts_with("organization 1 \"Acme Robotics\"  plan team  zone Europe/Berlin"),
        "{acme}"
    );
}
