use diesel::connection::SimpleConnection;
use usage_worker::config::SchemaName;
use usage_worker::db;

use crate::support::{cluster, dump};

fn schema_dump(dbname: &str) -> String {
    dump(dbname, &["--schema-only", "--no-owner", "--no-privileges"])
}

#[test]
fn migrations_up_down_up_leave_the_same_schema() {
    let cluster = cluster();
    let name = format!("t_migrations_{}", std::process::id());
    let mut admin = db::connect(&cluster.url("postgres")).unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let schema = SchemaName::default();
    let mut conn = db::connect_in(&cluster.url(&name), &schema).unwrap();

    let applied = db::run_migrations(&mut conn, &schema).unwrap();
    assert!(!applied.is_empty());
    let first = schema_dump(&name);
    assert!(first.contains("CREATE TABLE usage.usage_events"));
    assert!(first.contains("CREATE TABLE usage.__diesel_schema_migrations"));
    for line in first.lines() {
        assert!(
            !line.contains(" public."),
            "an object of the worker outside its schema: `{line}`"
        );
    }

    db::revert_all_migrations(&mut conn, &schema).unwrap();
    let empty = schema_dump(&name);
    for table in [
        "usage_events",
        "job_runs",
        "plans",
        "users",
        "aggregation_watermark",
    ] {
        assert!(
            !empty.contains(&format!("CREATE TABLE usage.{table} ")),
            "{table} survived the down migrations"
        );
    }
    assert!(!empty.contains("CREATE FUNCTION"), "{empty}");

    db::run_migrations(&mut conn, &schema).unwrap();
    let second = schema_dump(&name);
    if let Some((a, b)) = first.lines().zip(second.lines()).find(|(a, b)| a != b) {
        panic!("schema differs after down and up: `{a}` became `{b}`");
    }
    assert_eq!(first.lines().count(), second.lines().count());
    assert!(db::pending_migrations(&mut conn).unwrap().is_empty());
}

/// Each migration in turn, each down migration in reverse order: every down migration must
/// leave exactly the schema its up migration found, down to the function bodies it restores.
#[test]
fn every_down_migration_restores_the_schema_its_up_migration_found() {
    use diesel_migrations::MigrationHarness;

    let empty = crate::support::EmptyDb::new("down_each");
    let mut conn = empty.admin();
    conn.batch_execute("CREATE SCHEMA usage").unwrap();
    crate::support::definitions::use_migration_path(&mut conn);
    // diesel's own table, made before the first dump so that every dump has it.
    conn.applied_migrations().unwrap();
    let mut names = Vec::new();
    let mut dumps = vec![schema_dump(&empty.name)];
    loop {
        let pending = conn.pending_migrations(db::MIGRATIONS).unwrap();
        let Some(next) = pending.first() else { break };
        names.push(next.name().to_string());
        conn.run_migration(next.as_ref())
            .unwrap_or_else(|e| panic!("up {}: {e}", next.name()));
        dumps.push(schema_dump(&empty.name));
    }
    for (index, name) in names.iter().enumerate().rev() {
        conn.revert_last_migration(db::MIGRATIONS)
            .unwrap_or_else(|e| panic!("down {name}: {e}"));
        let after = schema_dump(&empty.name);
        let expected = &dumps[index];
        if let Some((want, got)) = expected.lines().zip(after.lines()).find(|(a, b)| a != b) {
            panic!("down of {name} does not restore the schema before it: `{want}` became `{got}`");
        }
        assert_eq!(
            expected.lines().count(),
            after.lines().count(),
            "down of {name} does not restore the schema before it"
        );
    }
}
