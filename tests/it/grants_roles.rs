//! Credit grants under the roles of the runbook (deploy/roles.sql): the application's role
//! grants and voids through usage_grant() / usage_void_grant() and reads the balance, but
//! deletes no grant (they are history); the daemon's role records what they gave; a reader
//! sees its own organization's grants and no one else's.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use usage_worker::db;

use crate::support::roles::RolesDb;
use crate::support::{self, text};

fn session(roles: &RolesDb, role: &str, setup: &str) -> PgConnection {
    let mut conn = db::connect(&roles.url_as(role)).expect("connect");
    conn.batch_execute(setup).expect("session setup");
    conn
}

#[test]
fn the_application_grants_and_voids_the_daemon_draws_and_a_reader_sees_its_own() {
    let roles = RolesDb::new("grants_roles", "usage");
    roles.migrate_as_owner();
    roles
        .admin()
        .batch_execute(
            "INSERT INTO usage.plans (id, name) VALUES (1, 'team');
             INSERT INTO usage.plan_limits (plan_id, metric, period, kind, max_value)
                  VALUES (1, 'tokens', 'month', '', 1000);
             INSERT INTO usage.users (id, email, plan_id) VALUES (1, 'ada@example.com', 1);
             INSERT INTO usage.organizations (id, name, plan_id) VALUES (2, 'Acme', 1), (3, 'Globex', 1);
             INSERT INTO usage.organization_members (org_id, user_id, role) VALUES (2, 1, 'owner'), (3, 1, 'owner');",
        )
        .unwrap();

    let mut app = session(&roles, &roles.writer, "SET search_path = public");
    let grant = |app: &mut PgConnection, org: i64| {
        text(
            app,
            &format!(
                "SELECT usage.usage_grant(p_org_id => {org}, p_metric => 'tokens', p_amount => 500,
                                          p_starts_at => '2026-11-01T00:00:00Z',
                                          p_expires_at => '2027-02-01T00:00:00Z',
                                          p_reason => 'top-up')::text AS t"
            ),
        )
    };
    let acme = grant(&mut app, 2);
    let globex = grant(&mut app, 3);
    app.batch_execute(
        "SELECT usage.usage_record(p_user_id => 1, p_org_id => 2, p_kind => 'ai_response',
                                   p_tokens => 1200, p_created_at => '2026-11-10T09:00:00Z')",
    )
    .unwrap();
    let deleted = app.batch_execute(&format!("DELETE FROM usage.usage_grants WHERE id = {acme}"));
    let refused = deleted.expect_err("the application deleted a grant");
    assert!(
        refused.to_string().contains("permission denied"),
        "{refused}"
    );
    assert_eq!(
        text(
            &mut app,
            &format!("SELECT usage.usage_void_grant({globex})::date::text AS t")
        )
        .len(),
        10
    );

    // Other tests' transactions in the shared cluster may hold the watermark back a moment:
    // run the job until it has counted the event.
    let drawn = || {
        support::count(
            &mut roles.admin(),
            &format!(
                "SELECT COALESCE(sum(drawn), 0)::bigint AS n FROM usage.usage_grant_draws
                  WHERE grant_id = {acme}"
            ),
        )
        .unwrap()
    };
    let recorded = support::wait_until(Duration::from_secs(60), || {
        let run = roles.run_as_worker(&["--run", "aggregate"]);
        assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
        drawn() > 0
    });
    assert!(recorded, "the daemon never counted the event");
    assert_eq!(drawn(), 200, "the daemon recorded what Acme's grant gave");

    let mut reader = session(&roles, &roles.reader, "SET usage.org_id = '2'");
    assert_eq!(
        text(
            &mut reader,
            "SELECT string_agg(id::text, ',') AS t FROM usage.usage_grants"
        ),
        acme,
        "a reader of Acme sees Acme's grant only"
    );
    assert_eq!(
        text(
            &mut reader,
            "SELECT grant_remaining::text || '/' || granted::text AS t
               FROM usage.org_quota_status(2, '2026-11-20T00:00:00Z')
              WHERE metric = 'tokens' AND period = 'month'"
        ),
        "300/500"
    );
    let written = reader.batch_execute(
        "SELECT usage.usage_grant(p_org_id => 2, p_metric => 'tokens', p_amount => 1,
                                  p_expires_at => now() + interval '1 day')",
    );
    assert!(written.is_err(), "a reader granted credit");
}
