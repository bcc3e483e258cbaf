//! Row-level security: a role granted `usage_reader` sees exactly the rows of the organization
//! `usage_current_org()` names, in every protected table and every function result, and writes
//! nothing; the daemon's and the applications' roles are not narrowed.

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;

use crate::support::docs::sql_example;
use crate::support::roles::RolesDb;
use crate::support::{self, count};

/// Two organizations (2 and 3) on one plan, user 1 in organization 2 and on their own, user 3
/// in organization 3, and user 0 (a legal application id) with personal usage. Every protected
/// table has a row of each organization and a personal one (org_id NULL or 0).
const BOOKS: &str = "
SET search_path = usage;
INSERT INTO plans (id, name) VALUES (1, 'team');
INSERT INTO plan_limits (plan_id, metric, period, kind, max_value) VALUES (1, 'tokens', 'month', '', 1000);
INSERT INTO users (id, email) VALUES (0, 'zero@example.com'), (1, 'ada@example.com'),
                                     (2, 'bob@example.com'), (3, 'cy@example.com');
INSERT INTO organizations (id, name, plan_id) VALUES (2, 'two', 1), (3, 'three', 1);
INSERT INTO organization_members (org_id, user_id, role)
     VALUES (2, 1, 'owner'), (2, 2, 'member'), (3, 3, 'owner');
SELECT usage_record(1, 'ai_response', p_tokens => 10, p_org_id => 2, p_created_at => '2026-11-10T10:00:00Z');
SELECT usage_record(2, 'ai_response', p_tokens => 20, p_org_id => 2, p_created_at => '2026-11-10T10:00:00Z');
SELECT usage_record(3, 'ai_response', p_tokens => 30, p_org_id => 3, p_created_at => '2026-11-10T10:00:00Z');
SELECT usage_record(1, 'ai_response', p_tokens => 5, p_created_at => '2026-11-10T10:00:00Z');
SELECT usage_record(0, 'ai_response', p_tokens => 7, p_created_at => '2026-11-10T10:00:00Z');
INSERT INTO token_usage_daily (user_id, day, kind, request_type, model, events, tokens, org_id)
     VALUES (1, '2026-11-10', 'ai_response', '', '', 1, 10, 2),
            (2, '2026-11-10', 'ai_response', '', '', 1, 20, 2),
            (3, '2026-11-10', 'ai_response', '', '', 1, 30, 3),
            (1, '2026-11-10', 'ai_response', '', '', 1, 5, NULL),
            (0, '2026-11-10', 'ai_response', '', '', 1, 7, NULL);
INSERT INTO usage_periods (user_id, org_id, period, period_start, period_end, requests, tokens)
     VALUES (0, 2, 'month', '2026-11-01', '2026-12-01', 2, 30),
            (0, 3, 'month', '2026-11-01', '2026-12-01', 1, 30),
            (1, 0, 'month', '2026-11-01', '2026-12-01', 1, 5),
            (0, 0, 'month', '2026-11-01', '2026-12-01', 1, 7);
INSERT INTO usage_period_kind_totals (user_id, org_id, period, period_start, kind, tokens)
     VALUES (0, 2, 'month', '2026-11-01', 'ai_response', 30),
            (0, 3, 'month', '2026-11-01', 'ai_response', 30),
            (1, 0, 'month', '2026-11-01', 'ai_response', 5),
            (0, 0, 'month', '2026-11-01', 'ai_response', 7);
-- The books above hold the events recorded here: the watermark passes them.
UPDATE aggregation_watermark SET xid = (pg_current_xact_id()::text::numeric + 1)::text::xid8;
INSERT INTO quota_alerts (user_id, org_id, metric, period, period_start, period_end, threshold,
                          used_value, limit_value, next_attempt_at, decided_at)
     VALUES (1, 2, 'tokens', 'month', '2026-11-01', '2026-12-01', 80, 800, 1000, now(), now()),
            (3, 3, 'tokens', 'month', '2026-11-01', '2026-12-01', 80, 800, 1000, now(), now()),
            (1, 0, 'tokens', 'month', '2026-11-01', '2026-12-01', 80, 800, 1000, now(), now()),
            (0, 0, 'tokens', 'month', '2026-11-01', '2026-12-01', 80, 800, 1000, now(), now());
";

/// Every table under the policies, with its organization column and its number of rows of
/// organization 2 in [`BOOKS`].
const PROTECTED: [(&str, &str, i64); 7] = [
    ("usage_events", "org_id", 2),
    ("token_usage_daily", "org_id", 2),
    ("usage_periods", "org_id", 1),
    ("usage_period_kind_totals", "org_id", 1),
    ("quota_alerts", "org_id", 1),
    ("organizations", "id", 1),
    ("organization_members", "org_id", 2),
];

/// A database set up by the runbook (roles.sql, `--migrate` as the owner, roles.sql again)
/// holding [`BOOKS`].
pub(crate) fn books(tag: &str) -> RolesDb {
    let roles = RolesDb::new(tag, "usage");
    roles.migrate_as_owner();
    roles.admin().batch_execute(BOOKS).expect("write the books");
    roles
}

/// A session of `role` in schema `usage`, with `setup` (e.g. `SET usage.org_id = '2'`) run.
fn session(roles: &RolesDb, role: &str, setup: &str) -> PgConnection {
    let mut conn = support::connect(&roles.url_as(role));
    if !setup.is_empty() {
        conn.batch_execute(setup)
            .unwrap_or_else(|e| panic!("{setup}: {e}"));
    }
    conn
}

fn n(conn: &mut PgConnection, sql: &str) -> i64 {
    count(conn, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The rows of each protected table `conn` sees, and of them the ones not of organization
/// `org`, as `table: seen/foreign`.
fn visible(conn: &mut PgConnection, org: i64) -> Vec<String> {
    PROTECTED
        .iter()
        .map(|(table, column, _)| {
            let seen = n(conn, &format!("SELECT count(*) AS n FROM {table}"));
            let foreign = n(
                conn,
                &format!("SELECT count(*) AS n FROM {table} WHERE {column} IS DISTINCT FROM {org}"),
            );
            format!("{table}: {seen}/{foreign}")
        })
        .collect()
}

/// The rows the functions an application may call return about organization `org` (`None`:
/// the personal books of users 1 and 0), as `call: rows`. A status row counts only when it
/// shows usage: with nothing visible it still lists the plan's limits at 0.
fn function_rows(conn: &mut PgConnection, org: Option<i64>) -> Vec<String> {
    let calls: Vec<(String, &str)> = match org {
        Some(org) => vec![
            (
                format!("org_quota_status({org}, '2026-11-10T12:00:00Z')"),
                "true",
            ),
            (
                format!("org_usage_summary({org}, 'day', '2026-11-01', '2026-11-30')"),
                "true",
            ),
            (
                format!("org_usage_by_member({org}, '2026-11-01', '2026-11-30')"),
                "true",
            ),
            (
                format!("usage_subject_status(0, {org}, '2026-11-10T12:00:00Z')"),
                "used > 0",
            ),
        ],
        None => vec![
            (
                "usage_summary(1, 'day', '2026-11-01', '2026-11-30')".into(),
                "true",
            ),
            (
                "usage_summary(0, 'day', '2026-11-01', '2026-11-30')".into(),
                "true",
            ),
            (
                "usage_subject_status(1, 0, '2026-11-10T12:00:00Z')".into(),
                "used > 0",
            ),
            (
                "usage_subject_status(0, 0, '2026-11-10T12:00:00Z')".into(),
                "used > 0",
            ),
        ],
    };
    calls
        .into_iter()
        .map(|(call, shows)| {
            let rows = n(
                conn,
                &format!("SELECT count(*) AS n FROM {call} WHERE {shows}"),
            );
            format!("{call}: {rows}")
        })
        .collect()
}

/// `function_rows` when nothing shows.
fn none_shown(conn: &mut PgConnection, org: Option<i64>) -> bool {
    function_rows(conn, org)
        .iter()
        .all(|row| row.ends_with(": 0"))
}

#[test]
fn a_reader_sees_exactly_its_organizations_rows_and_nothing_without_one() {
    let roles = books("rls_read");

    let mut two = session(&roles, &roles.reader, "SET usage.org_id = '2'");
    let expected: Vec<String> = PROTECTED
        .iter()
        .map(|(table, _, rows)| format!("{table}: {rows}/0"))
        .collect();
    assert_eq!(visible(&mut two, 2), expected);
    // Of the subjects (usage_subjects), its organization only: no user at all.
    assert_eq!(n(&mut two, "SELECT count(*) AS n FROM users"), 0);
    assert_eq!(
        n(
            &mut two,
            "SELECT count(*) AS n FROM usage_subjects WHERE user_id = 0 AND org_id = 2"
        ),
        1
    );
    assert_eq!(n(&mut two, "SELECT count(*) AS n FROM usage_subjects"), 1);
    assert_eq!(
        n(
            &mut two,
            "SELECT used::bigint AS n FROM org_quota_status(2, '2026-11-10T12:00:00Z')
              WHERE metric = 'tokens' AND period = 'month' AND kind = ''"
        ),
        30,
        "organization 2's own quota"
    );
    assert_eq!(
        n(
            &mut two,
            "SELECT sum(tokens)::bigint AS n FROM org_usage_summary(2, 'month', '2026-11-01', '2026-11-30')"
        ),
        30
    );
    assert_eq!(
        n(
            &mut two,
            "SELECT count(*) AS n FROM org_usage_by_member(2, '2026-11-01', '2026-11-30')"
        ),
        2
    );
    // Organization 3's and the personal books are invisible through every function.
    for org in [Some(3), None] {
        assert!(
            none_shown(&mut two, org),
            "{:?}",
            function_rows(&mut two, org)
        );
    }

    // Unset, empty, and 0 (the personal books' organization) all show nothing.
    let nothing: Vec<String> = PROTECTED
        .iter()
        .map(|(table, _, _)| format!("{table}: 0/0"))
        .collect();
    for setup in [
        "RESET usage.org_id",
        "SET usage.org_id = ''",
        "SET usage.org_id = '0'",
    ] {
        let mut reader = session(&roles, &roles.reader, setup);
        assert_eq!(visible(&mut reader, 0), nothing, "{setup}");
        for org in [Some(0), Some(2), Some(3), None] {
            assert!(
                none_shown(&mut reader, org),
                "{setup}: {:?}",
                function_rows(&mut reader, org)
            );
        }
    }
}

/// One INSERT, UPDATE and DELETE per protected table, each of a row of organization 2.
fn writes(table: &str, column: &str) -> [String; 3] {
    let insert = match table {
        "usage_events" => {
            "INSERT INTO usage_events (user_id, org_id, kind, created_at)
                           VALUES (1, 2, 'ai_response', '2026-11-10T11:00:00Z')"
        }
        "token_usage_daily" => {
            "INSERT INTO token_usage_daily (user_id, day, kind, request_type, model, org_id)
             VALUES (1, '2026-11-11', 'ai_response', '', '', 2)"
        }
        "usage_periods" => {
            "INSERT INTO usage_periods (user_id, org_id, period, period_start, period_end)
             VALUES (0, 2, 'day', '2026-11-10', '2026-11-11')"
        }
        "usage_period_kind_totals" => {
            "INSERT INTO usage_period_kind_totals (user_id, org_id, period, period_start, kind)
             VALUES (0, 2, 'month', '2026-11-01', 'image_generation')"
        }
        "quota_alerts" => {
            "INSERT INTO quota_alerts (user_id, org_id, metric, period, period_start, period_end,
                                       threshold, used_value, limit_value, next_attempt_at,
                                       decided_at)
             VALUES (1, 2, 'tokens', 'day', '2026-11-10', '2026-11-11', 80, 1, 1, now(), now())"
        }
        "organizations" => "INSERT INTO organizations (id) VALUES (4)",
        _ => "INSERT INTO organization_members (org_id, user_id) VALUES (2, 3)",
    };
    [
        insert.to_string(),
        format!("UPDATE {table} SET {column} = {column} WHERE {column} = 2"),
        format!("DELETE FROM {table} WHERE {column} = 2"),
    ]
}

#[test]
fn a_reader_writes_nothing_and_reads_no_partition_even_when_granted_it() {
    let roles = books("rls_write");
    let mut admin = roles.admin();
    let rows_of = |admin: &mut PgConnection| {
        PROTECTED
            .iter()
            .map(|(table, _, _)| n(admin, &format!("SELECT count(*) AS n FROM usage.{table}")))
            .collect::<Vec<_>>()
    };
    let before = rows_of(&mut admin);

    let mut reader = session(&roles, &roles.reader, "SET usage.org_id = '2'");
    for (table, column, _) in PROTECTED {
        for sql in writes(table, column) {
            let refused = reader.batch_execute(&sql).expect_err(&sql);
            assert!(
                refused.to_string().contains("permission denied"),
                "{sql}: {refused}"
            );
        }
    }
    let refused = reader
        .batch_execute("SELECT usage_record(1, 'ai_response', p_tokens => 1, p_org_id => 2)")
        .expect_err("a reader records nothing");
    assert!(
        refused.to_string().contains("permission denied"),
        "{refused}"
    );

    // The policies refuse the writes on their own, should a grant give the reader more.
    admin
        .batch_execute(&format!(
            "GRANT INSERT, UPDATE, DELETE ON usage.usage_events, usage.token_usage_daily,
                   usage.usage_periods, usage.usage_period_kind_totals, usage.quota_alerts,
                   usage.organizations, usage.organization_members TO {reader};
             GRANT USAGE ON SEQUENCE usage.usage_events_id_seq, usage.quota_alerts_id_seq
                TO {reader};",
            reader = roles.reader
        ))
        .unwrap();
    for (table, column, _) in PROTECTED {
        let [insert, update, delete] = writes(table, column);
        let refused = reader.batch_execute(&insert).expect_err(&insert);
        assert!(
            refused.to_string().contains("row-level security"),
            "{insert}: {refused}"
        );
        for sql in [update, delete] {
            let changed = diesel::sql_query(&sql)
                .execute(&mut reader)
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            assert_eq!(changed, 0, "{sql}");
        }
    }
    assert_eq!(rows_of(&mut admin), before);

    // The reader has no grant on any partition; granted one (GRANT SELECT ON ALL TABLES
    // does), it still reads only its organization's rows there: the default partition
    // (policies from the migration) and one created since (from usage_create_partition).
    admin
        .batch_execute("SELECT usage.usage_create_partition('2026-11-01')")
        .unwrap();
    for partition in ["usage_events_default", "usage_events_2026_11"] {
        let sql = format!("SELECT count(*) AS n FROM {partition}");
        let refused = count(&mut reader, &sql).expect_err(&sql);
        assert!(
            refused.to_string().contains("permission denied"),
            "{sql}: {refused}"
        );
        admin
            .batch_execute(&format!(
                "GRANT SELECT ON usage.{partition} TO {}",
                roles.reader
            ))
            .unwrap();
        let all = n(
            &mut admin,
            &format!("SELECT count(*) AS n FROM usage.{partition}"),
        );
        let own = n(
            &mut admin,
            &format!("SELECT count(*) AS n FROM usage.{partition} WHERE org_id = 2"),
        );
        assert_eq!(n(&mut reader, &sql), own, "{partition} as the reader");
        assert!(
            partition == "usage_events_default" || all > own,
            "{partition}: {all} rows"
        );
    }
    assert_eq!(
        n(&mut reader, "SELECT count(*) AS n FROM usage_events"),
        2,
        "through the parent, organization 2's events as before"
    );
}

#[test]
fn the_policies_hold_whatever_the_readers_search_path_and_nothing_bypasses_them() {
    let roles = books("rls_path");

    // A temporary relation named like a catalog, first in the reader's path, once made the
    // policy think the session was no reader at all.
    let mut reader = session(
        &roles,
        &roles.reader,
        "CREATE TEMP VIEW pg_roles AS SELECT 'nobody'::name AS rolname, 0::oid AS oid;
         SET search_path = pg_temp, pg_catalog, usage",
    );
    assert_eq!(
        visible(&mut reader, 0),
        PROTECTED
            .iter()
            .map(|(table, _, _)| format!("{table}: 0/0"))
            .collect::<Vec<_>>()
    );
    reader.batch_execute("SET usage.org_id = '2'").unwrap();
    assert!(
        visible(&mut reader, 2)
            .iter()
            .all(|row| row.ends_with("/0")),
        "{:?}",
        visible(&mut reader, 2)
    );

    let mut admin = roles.admin();
    // The functions of the policies resolve names in the catalog only.
    assert_eq!(
        n(
            &mut admin,
            "SELECT count(*) AS n FROM pg_proc
              WHERE pronamespace = 'usage'::regnamespace
                AND proname IN ('usage_current_org', 'usage_is_reader')
                AND proconfig @> ARRAY['search_path=pg_catalog, pg_temp']"
        ),
        2
    );
    // The SECURITY DEFINER functions: the partition functions, which neither the
    // applications nor the readers may call, and the two the application's notification
    // pages call (one-click unsubscribe, preferences), which a reader may not. Every one
    // keeps the migration's search_path, pg_temp last; every view is security_invoker.
    let definers = support::text(
        &mut admin,
        "SELECT string_agg(proname, ',' ORDER BY proname) AS t FROM pg_proc
          WHERE pronamespace = 'usage'::regnamespace AND prosecdef",
    );
    assert_eq!(
        definers,
        "usage_create_partition,usage_detach_partition,usage_drop_detached_partition,usage_set_alert_emails,usage_unsubscribe"
    );
    assert_eq!(
        n(
            &mut admin,
            "SELECT count(*) AS n FROM pg_proc
              WHERE pronamespace = 'usage'::regnamespace AND prosecdef
                AND NOT proconfig @> ARRAY['search_path=usage, pg_temp']"
        ),
        0,
        "a SECURITY DEFINER function whose search_path a caller could shadow"
    );
    for (role, callable) in [
        (&roles.reader, ""),
        (&roles.writer, "usage_set_alert_emails,usage_unsubscribe"),
    ] {
        assert_eq!(
            support::text(
                &mut admin,
                &format!(
                    "SELECT COALESCE(string_agg(proname, ',' ORDER BY proname), '') AS t FROM pg_proc
                      WHERE pronamespace = 'usage'::regnamespace AND prosecdef
                        AND has_function_privilege('{role}', oid, 'EXECUTE')"
                )
            ),
            callable,
            "{role}"
        );
    }
    assert_eq!(
        n(
            &mut admin,
            "SELECT count(*) AS n FROM pg_class
              WHERE relnamespace = 'usage'::regnamespace AND relkind IN ('v', 'm')
                AND NOT COALESCE(reloptions @> ARRAY['security_invoker=true'], false)"
        ),
        0,
        "a view of the schema runs as its owner"
    );
    // Every table the reader may read, but the plan catalogue and the watermark (one
    // transaction id, which splits counted events from pending ones), is under the policies.
    assert_eq!(
        n(
            &mut admin,
            "SELECT count(*) AS n FROM pg_class
              WHERE relnamespace = 'usage'::regnamespace AND relkind IN ('r', 'p')
                AND has_table_privilege('usage_reader', oid, 'SELECT') AND NOT relrowsecurity
                AND relname NOT IN ('plans', 'plan_limits', 'aggregation_watermark')"
        ),
        0,
        "a table the reader may read that has no policy"
    );
}

#[test]
fn the_daemon_and_the_writer_are_not_narrowed_by_the_policies() {
    let roles = books("rls_roles");
    let all = |conn: &mut PgConnection| {
        PROTECTED
            .iter()
            .map(|(table, _, _)| n(conn, &format!("SELECT count(*) AS n FROM {table}")))
            .collect::<Vec<_>>()
    };
    let mut admin = session(&roles, "postgres", "");
    let everything = all(&mut admin);

    let mut worker = session(&roles, &roles.worker, "SET usage.org_id = '2'");
    assert_eq!(all(&mut worker), everything);
    assert_eq!(
        n(
            &mut admin,
            &format!(
                "SELECT count(*) AS n FROM pg_roles WHERE rolname = '{}' AND rolbypassrls",
                roles.worker
            )
        ),
        1
    );
    let updated =
        diesel::sql_query("UPDATE quota_alerts SET attempts = attempts + 1 WHERE org_id = 3")
            .execute(&mut worker)
            .expect("the daemon keeps every organization's books");
    assert_eq!(updated, 1);

    let mut writer = session(&roles, &roles.writer, "SET usage.org_id = '2'");
    let recorded = n(
        &mut writer,
        "SELECT usage_record(3, 'ai_response', p_tokens => 3, p_org_id => 3,
                             p_created_at => '2026-11-10T11:00:00Z') AS n",
    );
    assert!(recorded > 0);
    for (call, rows) in [
        ("quota_status(1, '2026-11-10T12:00:00Z')", 10),
        ("org_quota_status(3, '2026-11-10T12:00:00Z')", 10),
        ("org_usage_by_member(3, '2026-11-01', '2026-11-30')", 1),
    ] {
        assert_eq!(
            n(&mut writer, &format!("SELECT count(*) AS n FROM {call}")),
            rows,
            "{call}"
        );
    }

    // The plain-INSERT pattern of docs/SCHEMA.md, as the applications' role: a retry with
    // the same key (and another created_at) inserts nothing.
    let example = sql_example("docs/SCHEMA.md", "usage_idempotency_keys");
    for created_at in ["2026-11-10T11:00:00Z", "2026-11-10T11:05:00Z"] {
        writer
            .batch_execute(&example.replace("2026-11-10T11:00:00Z", created_at))
            .unwrap_or_else(|e| panic!("{example}: {e}"));
    }
    assert_eq!(
        n(
            &mut admin,
            "SELECT count(*) AS n FROM usage_events WHERE user_id = 42"
        ),
        1
    );
}

#[test]
fn a_supabase_project_reads_the_organization_from_the_jwt() {
    let roles = books("rls_jwt");
    let replacement = sql_example("docs/SCHEMA.md", "request.jwt.claims");
    session(&roles, &roles.owner, "")
        .batch_execute(&replacement)
        .unwrap_or_else(|e| panic!("{replacement}: {e}"));

    let claims = |claims: &str| format!("SET request.jwt.claims = '{claims}'");
    let mut two = session(
        &roles,
        &roles.reader,
        &claims(r#"{"sub": "u1", "role": "authenticated", "app_metadata": {"org_id": 2}}"#),
    );
    let expected: Vec<String> = PROTECTED
        .iter()
        .map(|(table, _, rows)| format!("{table}: {rows}/0"))
        .collect();
    assert_eq!(visible(&mut two, 2), expected);
    // Once the organization comes from the JWT, the session setting no longer chooses it.
    two.batch_execute("SET usage.org_id = '3'").unwrap();
    assert_eq!(visible(&mut two, 2), expected);
    assert!(none_shown(&mut two, Some(3)));

    let nothing: Vec<String> = PROTECTED
        .iter()
        .map(|(table, _, _)| format!("{table}: 0/0"))
        .collect();
    for setup in [
        // user_metadata is the user's own to edit: never trusted.
        claims(r#"{"sub": "u1", "user_metadata": {"org_id": 3}}"#),
        claims(r#"{"sub": "u1"}"#),
        "RESET request.jwt.claims".to_string(),
        "SET usage.org_id = '2'".to_string(),
    ] {
        let mut reader = session(&roles, &roles.reader, &setup);
        assert_eq!(visible(&mut reader, 0), nothing, "{setup}");
    }
}
