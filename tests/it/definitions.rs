//! `sql/` is the one home of every function and view: each is defined by its own file, the
//! migrations build exactly what those files say (a migration that changes a definition is
//! written from them by `scripts/sql-migration`), `sql/structure.sql` is the schema they
//! build, and plpgsql_check finds nothing in any PL/pgSQL function.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Integer, Nullable, Text};
use diesel_migrations::MigrationHarness;
use usage_worker::db;

use crate::support::definitions::{
    self, DefinitionFile, Kind, Object, SCHEMA, apply, definition_text, drop_text, files, snapshot,
    use_migration_path,
};
use crate::support::{EmptyDb, TestDb, dump};

/// What names the objects of a file: its name and kind.
fn file_key(kind: Kind, name: &str) -> (Kind, String) {
    (kind, name.to_string())
}

/// The identities of the objects each file defines.
type ByFile = BTreeMap<(Kind, String), Vec<String>>;

/// The objects each file defines, and the objects no file defines.
fn objects_by_file(
    live: &BTreeMap<String, Object>,
    files: &[DefinitionFile],
) -> (ByFile, Vec<String>) {
    let mut by_file: ByFile = files
        .iter()
        .map(|f| (file_key(f.kind, &f.name), Vec::new()))
        .collect();
    let mut orphans = Vec::new();
    for object in live.values() {
        match by_file.get_mut(&file_key(object.kind, &object.name)) {
            Some(identities) => identities.push(object.identity.clone()),
            None => orphans.push(object.identity.clone()),
        }
    }
    (by_file, orphans)
}

#[test]
fn every_function_and_view_is_defined_by_its_file_in_sql_and_the_migrations_agree() {
    let db = TestDb::new();
    let mut conn = db.conn();
    use_migration_path(&mut conn);
    let files = files();
    let live = snapshot(&mut conn);

    let (by_file, orphans) = objects_by_file(&live, &files);
    assert!(
        orphans.is_empty(),
        "defined by the migrations but by no file in sql/functions or sql/views: {orphans:?}"
    );
    let unused: Vec<_> = by_file
        .iter()
        .filter(|(_, identities)| identities.is_empty())
        .map(|((_, name), _)| name)
        .collect();
    assert!(
        unused.is_empty(),
        "files in sql/ that define nothing the migrations create: {unused:?}; run \
         scripts/sql-migration NAME to write the migration that applies them"
    );

    let applied = conn.transaction::<_, diesel::result::Error, _>(|conn| {
        apply(conn, &files, false).unwrap_or_else(|e| panic!("{e}"));
        // Every body again, now checked against the whole schema.
        apply(conn, &files, true).unwrap_or_else(|e| panic!("{e}"));
        Ok(snapshot(conn))
    });
    let applied = applied.expect("apply sql/ in a transaction");
    let differing: Vec<&String> = live
        .keys()
        .chain(applied.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|identity| live.get(*identity) != applied.get(*identity))
        .collect();
    assert!(
        differing.is_empty(),
        "sql/ defines these differently from the migrations: {differing:?}; run \
         scripts/sql-migration NAME to write the migration that applies them"
    );
}

/// `sql/structure.sql`'s first line: what made it.
const STRUCTURE_HEADER: &str = "-- The schema the migrations build (schema usage), as pg_dump --schema-only --no-owner \
     prints it. Written by `UW_UPDATE_STRUCTURE=1 cargo test --test it definitions::` (or \
     scripts/sql-migration); never edited by hand.";

/// The dump of `dbname` as `sql/structure.sql` holds it: without the lines that differ on
/// every dump or with the pg_dump version.
fn structure_of(dbname: &str) -> String {
    let text = dump(dbname, &["--schema-only", "--no-owner"]);
    let mut lines = vec![STRUCTURE_HEADER.to_string()];
    lines.extend(
        text.lines()
            .filter(|l| !l.starts_with("-- Dumped from") && !l.starts_with("-- Dumped by"))
            .map(str::to_string),
    );
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

fn server_major(conn: &mut PgConnection) -> i32 {
    #[derive(QueryableByName)]
    struct Major {
        #[diesel(sql_type = Integer)]
        major: i32,
    }
    diesel::sql_query("SELECT current_setting('server_version_num')::int / 10000 AS major")
        .get_result::<Major>(conn)
        .expect("server version")
        .major
}

/// The PostgreSQL major version whose pg_dump wrote `sql/structure.sql`: another version
/// prints the same schema differently.
const STRUCTURE_MAJOR: i32 = 15;

#[test]
fn sql_structure_sql_is_the_schema_the_migrations_build() {
    let db = TestDb::new();
    let major = server_major(&mut db.conn());
    if major != STRUCTURE_MAJOR {
        eprintln!(
            "skipped: sql/structure.sql is PostgreSQL {STRUCTURE_MAJOR}'s pg_dump output; the \
             test cluster runs {major}"
        );
        return;
    }
    let actual = structure_of(&db.name);
    let path = definitions::sql_dir().join("structure.sql");
    if std::env::var("UW_UPDATE_STRUCTURE").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &actual).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if let Some((line, (want, got))) = expected
        .lines()
        .zip(actual.lines())
        .enumerate()
        .find(|(_, (a, b))| a != b)
    {
        panic!(
            "sql/structure.sql differs from what the migrations build, line {}:\n  file:       \
             {want}\n  migrations: {got}\nrun UW_UPDATE_STRUCTURE=1 cargo test --test it \
             definitions:: and commit the file",
            line + 1
        );
    }
    assert_eq!(
        expected.lines().count(),
        actual.lines().count(),
        "sql/structure.sql and the migrations' schema differ in length; run \
         UW_UPDATE_STRUCTURE=1 cargo test --test it definitions:: and commit the file"
    );
}

#[test]
fn plpgsql_check_finds_no_error_and_no_warning_in_any_function() {
    let db = TestDb::new();
    let mut conn = db.conn();
    if let Err(e) = conn.batch_execute("CREATE EXTENSION plpgsql_check") {
        let hint = "install postgresql-<version>-plpgsql-check (Debian)";
        assert!(
            std::env::var("CI").is_err(),
            "plpgsql_check is not installed ({e}); {hint}"
        );
        eprintln!("skipped: plpgsql_check is not installed ({e}); {hint}");
        return;
    }
    use_migration_path(&mut conn);
    #[derive(QueryableByName, Debug)]
    struct Finding {
        #[diesel(sql_type = Text)]
        function: String,
        #[diesel(sql_type = Nullable<Integer>)]
        lineno: Option<i32>,
        #[diesel(sql_type = Nullable<Text>)]
        level: Option<String>,
        #[diesel(sql_type = Nullable<Text>)]
        message: Option<String>,
        #[diesel(sql_type = Nullable<Text>)]
        hint: Option<String>,
    }
    // Trigger functions are checked against the table and transition table they serve.
    let findings: Vec<Finding> = diesel::sql_query(format!(
        "SELECT p.oid::regprocedure::text AS function, c.lineno, c.level, c.message, c.hint
           FROM pg_proc p
           JOIN pg_language l ON l.oid = p.prolang AND l.lanname = 'plpgsql'
           LEFT JOIN LATERAL (SELECT t.tgrelid, t.tgoldtable::text AS old_table,
                                     t.tgnewtable::text AS new_table
                                FROM pg_trigger t WHERE t.tgfoid = p.oid LIMIT 1) t ON true
          CROSS JOIN LATERAL plpgsql_check_function_tb(
                p.oid, COALESCE(t.tgrelid, 0),
                oldtable => t.old_table, newtable => t.new_table,
                extra_warnings => true, performance_warnings => false,
                security_warnings => true) c
          WHERE p.pronamespace = '{SCHEMA}'::regnamespace
          ORDER BY 1, 2"
    ))
    .load(&mut conn)
    .expect("run plpgsql_check");
    assert!(
        findings.is_empty(),
        "plpgsql_check:\n{}",
        findings
            .iter()
            .map(|f| format!(
                "  {} line {}: {} {} {}",
                f.function,
                f.lineno.unwrap_or(0),
                f.level.as_deref().unwrap_or(""),
                f.message.as_deref().unwrap_or(""),
                f.hint.as_deref().unwrap_or("")
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// scripts/sql-migration
// ---------------------------------------------------------------------------------------------

/// Where the written part of a migration starts (up.sql) or ends (down.sql).
const UP_MARKER: &str = "-- ==== Written by scripts/sql-migration from sql/: the definitions \
                         this migration changes ====";
const DOWN_MARKER: &str = "-- ==== Written by scripts/sql-migration: the definitions as they \
                           were before ====";
const DOWN_END: &str = "-- ==== End of the written part ====";

/// The part of `text` written by hand: up.sql above its marker, down.sql below its end.
fn hand_written(text: &str, up: bool) -> String {
    if up {
        text.split(UP_MARKER)
            .next()
            .unwrap_or("")
            .trim_end()
            .to_string()
    } else if text.contains(DOWN_MARKER) {
        text.split(DOWN_END).nth(1).unwrap_or("").trim().to_string()
    } else {
        text.trim().to_string()
    }
}

/// Writes the definitions of `sql/` that differ from what the migrations before it build into
/// the migration `UW_SQL_MIGRATION` names (`migrations/<version>_<name>`, made when missing;
/// its hand-written schema changes run first), with a down part that restores the earlier
/// definitions. Run by scripts/sql-migration.
#[test]
#[ignore = "writes a migration: run by scripts/sql-migration"]
fn write_the_migration_of_the_changed_definitions() {
    let Ok(dir_name) = std::env::var("UW_SQL_MIGRATION") else {
        panic!("set UW_SQL_MIGRATION to the migration's directory name");
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(&dir_name);
    std::fs::create_dir_all(&dir).expect("create the migration's directory");
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).unwrap_or_default();
    let hand_up = hand_written(&read("up.sql"), true);
    let hand_down = hand_written(&read("down.sql"), false);
    let version: String = dir_name
        .split('_')
        .next()
        .unwrap_or("")
        .chars()
        .filter(char::is_ascii_digit)
        .collect();

    let empty = EmptyDb::new("sql_migration");
    let mut conn = empty.admin();
    conn.batch_execute(&format!("CREATE SCHEMA {SCHEMA}"))
        .expect("create schema");
    use_migration_path(&mut conn);
    loop {
        let pending = conn.pending_migrations(db::MIGRATIONS).expect("pending");
        let Some(next) = pending.first() else { break };
        if next.name().version().to_string() >= version {
            break;
        }
        conn.run_migration(next.as_ref()).expect("run migration");
    }
    let files = files();
    let (up, down) = conn
        .transaction::<_, diesel::result::Error, _>(|conn| {
            let before = snapshot(conn);
            if !hand_up.is_empty() {
                conn.batch_execute(&hand_up)
                    .unwrap_or_else(|e| panic!("the hand-written part of up.sql: {e}"));
            }
            apply(conn, &files, false).unwrap_or_else(|e| panic!("{e}"));
            let after = snapshot(conn);
            Ok(written_parts(conn, &files, &before, &after))
        })
        .expect("compare the definitions");

    let mut up_sql = hand_up.clone();
    let mut down_sql = String::new();
    if !up.is_empty() {
        up_sql = format!(
            "{}{UP_MARKER}\nSET LOCAL check_function_bodies = off;\n\n{}\n",
            if hand_up.is_empty() {
                String::new()
            } else {
                format!("{hand_up}\n\n")
            },
            up.join("\n\n")
        );
        down_sql = format!(
            "{DOWN_MARKER}\nSET LOCAL check_function_bodies = off;\n\n{}\n{DOWN_END}\n",
            down.join("\n\n")
        );
    }
    if !hand_down.is_empty() {
        down_sql = format!(
            "{down_sql}{}{hand_down}\n",
            if down_sql.is_empty() { "" } else { "\n" }
        );
    }
    std::fs::write(dir.join("up.sql"), format!("{}\n", up_sql.trim_end())).expect("write up.sql");
    std::fs::write(dir.join("down.sql"), format!("{}\n", down_sql.trim_end()))
        .expect("write down.sql");
    eprintln!("{}: {} definition(s) written", dir.display(), up.len());
}

/// The statements of a migration's written parts: the files whose objects it adds or changes
/// (up), and what restores the objects as `before` had them (down).
fn written_parts(
    conn: &mut PgConnection,
    files: &[DefinitionFile],
    before: &BTreeMap<String, Object>,
    after: &BTreeMap<String, Object>,
) -> (Vec<String>, Vec<String>) {
    let changed = |identity: &String| before.get(identity) != after.get(identity);
    let mut up = Vec::new();
    for file in files {
        let touched = after
            .values()
            .filter(|o| o.kind == file.kind && o.name == file.name)
            .any(|o| changed(&o.identity));
        if touched {
            up.push(file.text.trim_end().to_string());
        }
    }
    // Down: views made here go first, then functions are restored or dropped, then the
    // views are restored, so that nothing is restored on top of what depends on it.
    let mut down = Vec::new();
    for object in after.values().filter(|o| o.kind == Kind::View) {
        if !before.contains_key(&object.identity) {
            down.push(drop_text(object));
        }
    }
    for kind in [Kind::Function, Kind::View] {
        for (identity, old) in before.iter().filter(|(_, o)| o.kind == kind) {
            if !changed(identity) {
                continue;
            }
            let mut restore = definition_text(old);
            if !after.contains_key(identity) {
                // Made again: its privileges as they were, not the defaults.
                restore.push_str(&privileges_text(old));
            }
            let replaceable = after.contains_key(identity) && replaces_cleanly(conn, &restore);
            if after.contains_key(identity) && !replaceable {
                down.push(drop_text(&after[identity]));
            }
            down.push(restore);
        }
        if kind == Kind::Function {
            for object in after.values().filter(|o| o.kind == Kind::Function) {
                if !before.contains_key(&object.identity) {
                    down.push(drop_text(object));
                }
            }
        }
    }
    (up, down)
}

/// The statements that give a function made again the privileges `object` had: EXECUTE
/// revoked from PUBLIC when PUBLIC did not have it, granted to every other role that did (the
/// owner keeps its own). Nothing for the defaults.
fn privileges_text(object: &Object) -> String {
    let Some(acl) = &object.acl else {
        return String::new();
    };
    let what = match object.kind {
        Kind::Function => format!("FUNCTION {}", object.identity),
        Kind::View => format!("TABLE {}", object.identity),
    };
    let entries: Vec<(&str, &str, &str)> = acl
        .trim_matches(|c| c == '{' || c == '}')
        .split(',')
        .filter_map(|item| {
            let (grantee, rest) = item.split_once('=')?;
            let (privileges, grantor) = rest.split_once('/')?;
            Some((grantee, privileges, grantor))
        })
        .collect();
    let mut text = String::new();
    if !entries.iter().any(|(grantee, _, _)| grantee.is_empty()) {
        text.push_str(&format!("\nREVOKE ALL ON {what} FROM PUBLIC;"));
    }
    for (grantee, privileges, grantor) in entries {
        if !grantee.is_empty() && grantee != grantor && privileges.contains('X') {
            text.push_str(&format!("\nGRANT EXECUTE ON {what} TO {grantee};"));
        }
    }
    text
}

/// Whether `statement` (an earlier definition) can replace the current one in place: not when
/// its result type or argument names differ, which needs a drop first.
fn replaces_cleanly(conn: &mut PgConnection, statement: &str) -> bool {
    conn.transaction::<(), diesel::result::Error, _>(|conn| {
        let ok = conn.batch_execute(statement).is_ok();
        Err(if ok {
            diesel::result::Error::RollbackTransaction
        } else {
            diesel::result::Error::NotFound
        })
    })
    .err()
    .is_some_and(|e| matches!(e, diesel::result::Error::RollbackTransaction))
}
