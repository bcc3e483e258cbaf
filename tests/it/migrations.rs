use std::process::Command;

use diesel::connection::SimpleConnection;
use usage_worker::db;

use crate::support::cluster;

fn schema_dump(dbname: &str) -> String {
    let cluster = cluster();
    let output = Command::new(cluster.bin_dir.join("pg_dump"))
        .args([
            "--schema-only",
            "--no-owner",
            "--no-privileges",
            "-U",
            "postgres",
            "-h",
        ])
        .arg(&cluster.data_dir)
        .arg(dbname)
        .output()
        .expect("run pg_dump");
    assert!(
        output.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // \restrict lines carry a random key per dump; everything else must match.
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn migrations_up_down_up_leave_the_same_schema() {
    let cluster = cluster();
    let name = format!("t_migrations_{}", std::process::id());
    let mut admin = db::connect(&cluster.url("postgres")).unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let mut conn = db::connect(&cluster.url(&name)).unwrap();

    let applied = db::run_migrations(&mut conn).unwrap();
    assert!(!applied.is_empty());
    let first = schema_dump(&name);
    assert!(first.contains("CREATE TABLE public.usage_events"));

    db::revert_all_migrations(&mut conn).unwrap();
    let empty = schema_dump(&name);
    for table in [
        "usage_events",
        "job_runs",
        "plans",
        "users",
        "aggregation_watermark",
    ] {
        assert!(
            !empty.contains(&format!("CREATE TABLE public.{table} ")),
            "{table} survived the down migrations"
        );
    }

    db::run_migrations(&mut conn).unwrap();
    let second = schema_dump(&name);
    if let Some((a, b)) = first.lines().zip(second.lines()).find(|(a, b)| a != b) {
        panic!("schema differs after down and up: `{a}` became `{b}`");
    }
    assert_eq!(first.lines().count(), second.lines().count());
    assert!(db::pending_migrations(&mut conn).unwrap().is_empty());
}
