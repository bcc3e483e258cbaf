//! Organizations on the command line: `--usage --org`, `--export-csv --org`, and the demo
//! data set. The books are written here as aggregation leaves them, so these tests read what
//! the CLI shows, not how aggregation counts.

use usage_worker::demo;
use usage_worker::export::{ExportScope, write_daily_csv};

use crate::support::quota::month_tokens;
use crate::support::{self, TestDb, binary, output};

/// Organization 7 "Acme" in Kolkata on a plan of 100,000 tokens a month, with an owner, an
/// admin and a member living in other zones; 71,234 tokens used this month, by the owner and
/// the admin. The member's usage is personal, so it is not the organization's.
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

#[test]
fn usage_of_an_organization_shows_its_bars_in_its_zone_and_its_top_members_masked() {
    let db = TestDb::new();
    acme_with_usage_this_month(&db);

    let table = support::stdout_of_success(db.binary().args(["--usage", "--org", "7"]));
    assert!(
        table.starts_with("organization 7 \"Acme\"  plan team  zone Asia/Kolkata  at "),
        "{table}"
    );
    assert!(table.lines().next().unwrap().ends_with(" IST"), "{table}");
    let tokens = table
        .lines()
        .find(|l| l.starts_with("tokens/month"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        tokens.contains("71%") && tokens.contains("71,234 / 100,000"),
        "{tokens}"
    );
    assert!(tokens.contains(" 00:00 Asia/Kolkata"), "{tokens}");
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

    let json: serde_json::Value = serde_json::from_str(&support::stdout_of_success(
        db.binary().args(["--usage", "--org", "7", "--json"]),
    ))
    .unwrap();
    assert_eq!(
        (&json["org_id"], &json["name"]),
        (&7.into(), &"Acme".into())
    );
    assert_eq!(json["zone_used"], "Asia/Kolkata");
    assert_eq!(month_tokens(&json)["used"], 71234);
    assert_eq!(month_tokens(&json)["remaining"], 28766);
    let top = &json["top_members"];
    assert_eq!(top["members"][0]["user_id"], 2);
    assert_eq!(top["members"][0]["role"], "admin");
    assert_eq!(top["members"][0]["email"], "u***@example.com");
    assert_eq!(top["members"][1]["cost"], 0.5);
    assert_eq!(top["more"], 0);
}

#[test]
fn usage_of_an_unknown_organization_or_of_both_or_neither_subjects_is_a_usage_error() {
    let db = TestDb::new();
    let unknown = output({
        let mut command = db.binary();
        command.args(["--usage", "--org", "404"]);
        command
    });
    assert_eq!(unknown.code, 2, "{}", unknown.stderr);
    assert!(
        unknown.stderr.contains("organization 404"),
        "{}",
        unknown.stderr
    );

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
fn export_of_an_organization_writes_its_members_rows_with_org_id_last() {
    let db = TestDb::new();
    acme_with_usage_this_month(&db);
    db.execute(
        "UPDATE token_usage_daily SET day = '2026-10-05';
         INSERT INTO token_usage_daily (user_id, day, kind, request_type, model, events, tokens, org_id)
         VALUES (1, '2026-10-06', 'message_sent', 'chat', '', 1, 0, NULL),
                (1, '2026-11-01', 'ai_response', '', '', 1, 5, 7)",
    );
    let export = |scope| {
        let mut out = Vec::new();
        let rows = write_daily_csv(
            &mut db.conn(),
            "2026-10-01".parse().unwrap(),
            "2026-10-31".parse().unwrap(),
            scope,
            &mut out,
        )
        .unwrap();
        (rows, String::from_utf8(out).unwrap())
    };
    let (rows, text) = export(ExportScope::Organization(7));
    assert_eq!(rows, 2);
    assert_eq!(
        text,
        "user_id,day,kind,request_type,model,events,tokens,prompt_tokens,completion_tokens,messages,bytes,cost,org_id\n\
         1,2026-10-05,ai_response,,,2,1234,0,0,0,0,0.5,7\n\
         2,2026-10-05,ai_response,,,5,70000,0,0,0,0,2.25,7\n"
    );
    let (_, user_1) = export(ExportScope::User(1));
    assert!(
        user_1.ends_with(",0.5,7\n1,2026-10-06,message_sent,chat,,1,0,0,0,0,0,0,\n"),
        "{user_1}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("acme.csv");
    support::stdout_of_success(
        db.binary()
            .args(["--export-csv", "--from", "2026-10-01", "--to", "2026-11-30"])
            .args(["--org", "7", "--output"])
            .arg(&path),
    );
    let file = std::fs::read_to_string(&path).unwrap();
    assert_eq!(file.lines().count(), 4, "{file}");
    assert!(file.lines().skip(1).all(|l| l.ends_with(",7")), "{file}");
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

#[test]
fn a_member_that_left_is_still_listed_by_usage_without_a_role() {
    let db = TestDb::new();
    acme_with_usage_this_month(&db);
    db.execute("DELETE FROM organization_members WHERE user_id = 2");
    let json: serde_json::Value = serde_json::from_str(&support::stdout_of_success(
        db.binary().args(["--usage", "--org", "7", "--json"]),
    ))
    .unwrap();
    let top = &json["top_members"]["members"];
    assert_eq!(
        (&top[0]["user_id"], &top[0]["role"]),
        (&2.into(), &serde_json::Value::Null)
    );
}
