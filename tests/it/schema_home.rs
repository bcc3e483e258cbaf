//! The worker lives in a schema of its own inside the application's database: nothing of the
//! application's is touched, applications' calls resolve in the worker's schema whatever their
//! search_path, the daemon's role owns nothing, and a database of the earlier all-in-public
//! layout is moved into the schema by `--migrate`.

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Nullable, Numeric, Text};
use diesel_migrations::MigrationHarness;
use usage_worker::config::SchemaName;
use usage_worker::db;
use usage_worker::jobs::{JobKind, RunOpts};

use crate::support::roles::{RolesDb, creatable_by, owned_by};
use crate::support::{self, EmptyDb, dump, wait_until};

/// What a typical web application already has in `public`, with rows.
const APPLICATION_OBJECTS: &str = "
    CREATE TABLE public.plans (id bigserial PRIMARY KEY, name text NOT NULL, price_cents int);
    CREATE TABLE public.users (id bigserial PRIMARY KEY, email text NOT NULL,
                               plan_id bigint REFERENCES public.plans (id));
    CREATE TABLE public.prices (kind text, model text, valid_from timestamptz,
                                per_event numeric, per_1k_prompt_tokens numeric,
                                per_1k_completion_tokens numeric, per_1k_tokens numeric,
                                per_mb numeric);
    CREATE FUNCTION public.quota_status(p_user_id bigint) RETURNS text
        LANGUAGE sql AS $$ SELECT 'the application''s own' $$;
    CREATE TABLE public.__diesel_schema_migrations (
        version VARCHAR(50) PRIMARY KEY NOT NULL,
        run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP);
    INSERT INTO public.__diesel_schema_migrations (version) VALUES ('20200101000000'), ('20200202000000');
    INSERT INTO public.plans (id, name, price_cents) VALUES (1, 'Starter', 900), (2, 'Team', 4900);
    INSERT INTO public.users (id, email, plan_id) VALUES (1, 'ada@example.com', 2);
    INSERT INTO public.prices (kind, model, valid_from, per_event)
        VALUES ('image_generation', '', '-infinity', 99);";

fn public_dump(dbname: &str) -> String {
    dump(dbname, &["--schema", "public"])
}

#[test]
fn migrate_and_every_job_leave_the_applications_own_public_objects_untouched() {
    let app = EmptyDb::new("home_app");
    app.admin().batch_execute(APPLICATION_OBJECTS).unwrap();
    let before = public_dump(&app.name);

    let migrate = app.run(&["--migrate"], &[]);
    assert_eq!(migrate.code, 0, "{}\n{}", migrate.stdout, migrate.stderr);
    let all = app.run(&["--run", "all", "--at", "2026-11-10T12:00:00Z"], &[]);
    assert_eq!(all.code, 0, "{}\n{}", all.stdout, all.stderr);

    assert_eq!(public_dump(&app.name), before, "public changed");
    let mut conn = app.admin();
    let ours = "SELECT count(*) AS n FROM pg_class
                 WHERE relnamespace = 'usage'::regnamespace
                   AND relname IN ('plans', 'users', 'prices', 'usage_events', 'job_runs',
                                   '__diesel_schema_migrations', 'usage_events_2026_11')";
    assert_eq!(support::count(&mut conn, ours).unwrap(), 7);
    let mut worker = support::connect(&app.url());
    assert!(db::pending_migrations(&mut worker).unwrap().is_empty());
}

#[derive(QueryableByName, Debug)]
struct QuotaRow {
    #[diesel(sql_type = Text)]
    metric: String,
    #[diesel(sql_type = Text)]
    period: String,
    #[diesel(sql_type = Numeric)]
    used: bigdecimal::BigDecimal,
    #[diesel(sql_type = Nullable<Numeric>)]
    limit_value: Option<bigdecimal::BigDecimal>,
}

#[test]
fn an_application_role_on_search_path_public_gets_the_workers_answers() {
    let roles = RolesDb::new("home_writer", "usage");
    roles.admin().batch_execute(APPLICATION_OBJECTS).unwrap();
    roles.migrate_as_owner();
    roles
        .admin()
        .batch_execute(&format!(
            "GRANT SELECT ON public.prices, public.users, public.plans TO {writer};
             INSERT INTO usage.plans (id, name) VALUES (1, 'free');
             INSERT INTO usage.plan_limits (plan_id, metric, period, kind, max_value)
                  VALUES (1, 'tokens', 'day', '', 1000);
             INSERT INTO usage.users (id, email, plan_id) VALUES (1, 'ada@example.com', 1);
             INSERT INTO usage.prices (kind, per_event) VALUES ('image_generation', 0.04);",
            writer = roles.writer
        ))
        .unwrap();

    let mut app = db::connect(&roles.url_as(&roles.writer)).unwrap();
    app.batch_execute("SET search_path = public").unwrap();
    app.batch_execute(
        "SELECT usage.usage_record(p_user_id => 1, p_kind => 'image_generation', p_tokens => 100,
                                   p_created_at => '2026-11-10T09:00:00Z')",
    )
    .unwrap();
    assert_eq!(
        support::count(
            &mut roles.admin(),
            "SELECT count(*) AS n FROM usage.usage_events WHERE cost = 0.04 AND tokens = 100"
        )
        .unwrap(),
        1,
        "the event was priced from usage.prices"
    );
    let refused = app
        .batch_execute("SELECT usage.usage_create_partition('2030-01-01')")
        .expect_err("the writer may not create partitions");
    assert!(
        refused.to_string().contains("permission denied"),
        "{refused}"
    );

    // Counted by the daemon's role, then read back by the application.
    let ctx = support::ctx_for(&roles.url_as(&roles.worker));
    let mut worker = ctx.connect().unwrap();
    let at = support::at("2026-11-10T12:00:00Z");
    let used = |app: &mut PgConnection| -> Vec<QuotaRow> {
        diesel::sql_query(
            "SELECT metric, period, used, limit_value
               FROM usage.quota_status(1, '2026-11-10T12:00:00Z')
              WHERE metric = 'tokens' AND period = 'day' AND kind = ''",
        )
        .load(app)
        .unwrap()
    };
    let counted = wait_until(std::time::Duration::from_secs(30), || {
        JobKind::Aggregate
            .run(&ctx, &mut worker, at, &RunOpts::default())
            .unwrap();
        used(&mut app).first().is_some_and(|r| r.used == 100)
    });
    let rows = used(&mut app);
    assert!(counted, "{rows:?}");
    assert_eq!(
        rows[0].limit_value,
        Some(bigdecimal::BigDecimal::from(1000))
    );
    assert_eq!(
        (rows[0].metric.as_str(), rows[0].period.as_str()),
        ("tokens", "day")
    );
    assert_eq!(
        support::count(
            &mut app,
            "SELECT sum(tokens)::bigint AS n
               FROM usage.usage_summary(1, 'day', '2026-11-10', '2026-11-10')"
        )
        .unwrap(),
        100
    );
}

#[test]
fn the_daemons_role_owns_nothing_creates_nothing_and_still_manages_partitions() {
    let roles = RolesDb::new("home_worker", "usage");
    roles.migrate_as_owner();

    let created = roles.run_as_worker(&["--run", "partitions", "--at", "2024-01-15T00:00:00Z"]);
    assert_eq!(created.code, 0, "{}\n{}", created.stdout, created.stderr);
    let mut check = roles.admin();
    let exists = |check: &mut PgConnection, name: &str| {
        support::count(
            check,
            &format!("SELECT count(*) AS n FROM pg_class WHERE oid = to_regclass('usage.{name}')"),
        )
        .unwrap()
    };
    assert_eq!(exists(&mut check, "usage_events_2024_01"), 1);
    assert_eq!(exists(&mut check, "usage_events_2024_02"), 1);

    let retention = roles.run_as_worker(&["--run", "retention", "--at", "2026-11-10T12:00:00Z"]);
    assert_eq!(
        retention.code, 0,
        "{}\n{}",
        retention.stdout, retention.stderr
    );
    assert_eq!(
        exists(&mut check, "usage_events_2024_01"),
        0,
        "{}",
        retention.stdout
    );
    assert_eq!(
        exists(&mut check, "usage_events_2024_02"),
        0,
        "{}",
        retention.stdout
    );

    let all = roles.run_as_worker(&["--run", "all", "--at", "2026-11-10T12:00:00Z"]);
    assert_eq!(all.code, 0, "{}\n{}", all.stdout, all.stderr);
    assert_eq!(exists(&mut check, "usage_events_2026_11"), 1);

    assert_eq!(
        support::count(&mut check, &owned_by(&roles.worker)).unwrap(),
        0
    );
    assert_eq!(
        support::count(&mut check, &creatable_by(&roles.worker)).unwrap(),
        0,
        "the daemon's role may create objects somewhere"
    );
}

#[test]
fn a_non_default_schema_works_end_to_end_and_an_invalid_one_exits_78() {
    let app = EmptyDb::new("home_metering");
    let env = [("USAGE_WORKER__DATABASE__SCHEMA", "metering")];
    let migrate = app.run(&["--migrate"], &env);
    assert_eq!(migrate.code, 0, "{}\n{}", migrate.stdout, migrate.stderr);
    let all = app.run(&["--run", "all", "--at", "2026-11-10T12:00:00Z"], &env);
    assert_eq!(all.code, 0, "{}\n{}", all.stdout, all.stderr);

    let mut conn = app.admin();
    let placed = "SELECT count(*) FILTER (WHERE relnamespace = 'metering'::regnamespace) AS n
                   FROM pg_class WHERE relname IN ('usage_events', 'job_runs', 'usage_events_2026_11')";
    assert_eq!(support::count(&mut conn, placed).unwrap(), 3);
    let elsewhere = "SELECT count(*) AS n FROM pg_class
                      WHERE relnamespace IN ('public'::regnamespace)
                         OR relnamespace = to_regnamespace('usage')";
    assert_eq!(support::count(&mut conn, elsewhere).unwrap(), 0);
    let succeeded = "SELECT count(*) AS n FROM metering.job_runs WHERE status = 'succeeded'";
    assert_eq!(
        support::count(&mut conn, succeeded).unwrap() as usize,
        JobKind::ALL.len()
    );

    for bad in ["public", "pg_usage", "Usage"] {
        let out = app.run(&["--migrate"], &[("USAGE_WORKER__DATABASE__SCHEMA", bad)]);
        assert_eq!(out.code, 78, "{bad}: {}\n{}", out.stdout, out.stderr);
        assert!(
            out.stderr.contains("database.schema"),
            "{bad}: {}",
            out.stderr
        );
    }
}

/// Runs the migrations of the release that kept everything in `public` (up to
/// `2026-11-29-000005`) as it did: with search_path = public.
fn migrate_as_the_earlier_release(conn: &mut PgConnection) {
    conn.batch_execute("SET search_path = public").unwrap();
    loop {
        let pending = conn.pending_migrations(db::MIGRATIONS).unwrap();
        let Some(next) = pending.first() else { break };
        if next.name().version().to_string().as_str() > "20261129000005" {
            break;
        }
        conn.run_migration(next.as_ref()).unwrap();
    }
}

#[test]
fn migrate_moves_a_database_of_the_public_layout_into_the_schema_keeping_every_row() {
    let app = EmptyDb::new("home_upgrade");
    let mut old = app.admin();
    old.batch_execute(
        "CREATE TABLE public.app_accounts (id int PRIMARY KEY, name text);
         INSERT INTO public.app_accounts VALUES (7, 'acme');
         CREATE FUNCTION public.app_hello() RETURNS text LANGUAGE sql AS $$ SELECT 'hi' $$;
         CREATE TABLE public.__diesel_schema_migrations (
             version VARCHAR(50) PRIMARY KEY NOT NULL,
             run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP);
         INSERT INTO public.__diesel_schema_migrations (version) VALUES ('20200101000000');",
    )
    .unwrap();
    migrate_as_the_earlier_release(&mut old);
    old.batch_execute(
        "CREATE TABLE usage_events_2026_10 PARTITION OF usage_events
             FOR VALUES FROM ('2026-10-01T00:00:00Z') TO ('2026-11-01T00:00:00Z');
         INSERT INTO plans (id, name) VALUES (1, 'free');
         INSERT INTO plan_limits (plan_id, metric, period, kind, max_value)
              VALUES (1, 'tokens', 'month', '', 1000);
         INSERT INTO users (id, email, plan_id) VALUES (1, 'ada@example.com', 1);
         SELECT usage_record(p_user_id => 1, p_kind => 'ai_response', p_tokens => 5,
                             p_created_at => '2026-10-05T00:00:00Z');
         SELECT usage_record(p_user_id => 1, p_kind => 'ai_response', p_tokens => 7,
                             p_created_at => '2031-01-01T00:00:00Z');",
    )
    .unwrap();
    drop(old);
    let app_before = dump(&app.name, &["--table", "public.app_accounts"]);

    let migrate = app.run(&["--migrate"], &[]);
    assert_eq!(migrate.code, 0, "{}\n{}", migrate.stdout, migrate.stderr);

    let mut conn = app.admin();
    let public_relations = "SELECT count(*) AS n FROM pg_class c
                             WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
                               AND c.relname NOT IN ('app_accounts', '__diesel_schema_migrations')";
    assert_eq!(support::count(&mut conn, public_relations).unwrap(), 0);
    let public_functions = "SELECT count(*) AS n FROM pg_proc
                             WHERE pronamespace = 'public'::regnamespace AND proname <> 'app_hello'";
    assert_eq!(support::count(&mut conn, public_functions).unwrap(), 0);
    assert_eq!(
        support::count(
            &mut conn,
            "SELECT count(*) AS n FROM public.__diesel_schema_migrations"
        )
        .unwrap(),
        1,
        "the application's migration rows stay, ours moved"
    );
    assert_eq!(
        dump(&app.name, &["--table", "public.app_accounts"]),
        app_before
    );
    for (sql, expected) in [
        ("SELECT count(*) AS n FROM usage.usage_events", 2),
        ("SELECT count(*) AS n FROM usage.usage_events_2026_10", 1),
        ("SELECT count(*) AS n FROM usage.usage_events_default", 1),
        (
            "SELECT count(*) AS n FROM usage.users WHERE email = 'ada@example.com'",
            1,
        ),
        ("SELECT count(*) AS n FROM usage.plan_limits", 1),
        ("SELECT count(*) AS n FROM usage.aggregation_watermark", 1),
    ] {
        assert_eq!(support::count(&mut conn, sql).unwrap(), expected, "{sql}");
    }
    let mut worker = db::connect_in(&app.url(), &SchemaName::default()).unwrap();
    assert!(db::pending_migrations(&mut worker).unwrap().is_empty());

    let all = app.run(&["--run", "all", "--at", "2026-11-10T12:00:00Z"], &[]);
    assert_eq!(all.code, 0, "{}\n{}", all.stdout, all.stderr);
    let again = app.run(&["--migrate"], &[]);
    assert_eq!(again.code, 0, "{}\n{}", again.stdout, again.stderr);
    assert!(
        again.stdout.contains("schema is up to date"),
        "{}",
        again.stdout
    );
}

/// `usage_events.user_id` has no foreign key to `users`: an application's insert never fails
/// because its user is not synced yet. The usage is counted at once and shows against the
/// user's plan as soon as the row appears.
#[test]
fn usage_of_a_user_not_yet_synced_is_accepted_and_counts_once_the_user_appears() {
    let db = support::TestDb::new();
    db.execute(
        "INSERT INTO plans (id, name) VALUES (1, 'free');
         INSERT INTO plan_limits (plan_id, metric, period, kind, max_value)
              VALUES (1, 'tokens', 'month', '', 1000);
         SELECT usage_record(p_user_id => 5, p_kind => 'ai_response', p_tokens => 100,
                             p_created_at => '2026-11-10T09:00:00Z');",
    );
    let ctx = db.ctx();
    let mut conn = db.conn();
    let at = support::at("2026-11-10T12:00:00Z");
    let open_periods = "SELECT count(*) AS n FROM usage_periods WHERE user_id = 5 AND tokens = 100";
    assert!(wait_until(std::time::Duration::from_secs(30), || {
        JobKind::Aggregate
            .run(&ctx, &mut conn, at, &RunOpts::default())
            .unwrap();
        db.count(open_periods) == 2
    }));
    let status = "SELECT count(*) AS n FROM quota_status(5, '2026-11-10T12:00:00Z')
                   WHERE metric = 'tokens' AND period = 'month' AND used = 100 AND limit_value = 1000";
    assert_eq!(db.count(status), 0, "no plan before the user is synced");

    db.execute("INSERT INTO users (id, email, plan_id) VALUES (5, 'eve@example.com', 1)");
    assert_eq!(db.count(status), 1);
}
