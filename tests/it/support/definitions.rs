//! The live definitions in `sql/` (a file per function or view) and what PostgreSQL makes of
//! them, for the tests that keep `sql/`, the migrations and `sql/structure.sql` one, and for
//! `scripts/sql-migration`, which writes the migration that applies changed definitions.
//!
//! A definition file holds one `CREATE OR REPLACE FUNCTION` (or `VIEW`), possibly followed by
//! statements about it (`REVOKE EXECUTE`); its file name is the object's name. Functions fix
//! their `search_path` with `SET search_path FROM CURRENT`: migrations run with
//! `search_path = <schema>, pg_temp`, which the function keeps.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Nullable, Text};

/// The schema the tests migrate into.
pub const SCHEMA: &str = "usage";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Function,
    View,
}

/// One file of `sql/functions` or `sql/views`.
#[derive(Debug, Clone)]
pub struct DefinitionFile {
    pub kind: Kind,
    /// The object's name: the file's stem.
    pub name: String,
    pub path: PathBuf,
    pub text: String,
}

/// The repository's `sql/` directory.
pub fn sql_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sql")
}

/// Every definition file: the functions, then the views (a view needs the functions it
/// calls), each in file-name order.
pub fn files() -> Vec<DefinitionFile> {
    let mut all = Vec::new();
    for (kind, dir) in [(Kind::Function, "functions"), (Kind::View, "views")] {
        let dir = sql_dir().join(dir);
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("a directory entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "sql"))
            .collect();
        paths.sort();
        for path in paths {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
            all.push(DefinitionFile {
                kind,
                name,
                path,
                text,
            });
        }
    }
    all
}

/// A function or view of the schema as PostgreSQL prints it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub kind: Kind,
    /// `proname` or `relname`: the name of the file that defines it.
    pub name: String,
    /// What identifies it: `quota_status(bigint,timestamp with time zone)`, or the view's name.
    pub identity: String,
    /// `pg_get_functiondef`, or `CREATE OR REPLACE VIEW … AS …`.
    pub definition: String,
    /// Its privileges (`proacl`, `relacl`), NULL for the defaults.
    pub acl: Option<String>,
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    identity: String,
    #[diesel(sql_type = Text)]
    definition: String,
    #[diesel(sql_type = Nullable<Text>)]
    acl: Option<String>,
}

/// Makes the connection resolve names as migrations do, so that identities and definitions
/// print unqualified and `SET search_path FROM CURRENT` keeps `<schema>, pg_temp`.
pub fn use_migration_path(conn: &mut PgConnection) {
    conn.batch_execute(&format!("SET search_path TO {SCHEMA}, pg_temp"))
        .expect("set search_path");
}

/// Every function and view of the schema, by identity.
pub fn snapshot(conn: &mut PgConnection) -> BTreeMap<String, Object> {
    let rows: Vec<Row> = diesel::sql_query(format!(
        "SELECT 'function' AS kind, p.proname::text AS name, p.oid::regprocedure::text AS identity,
                pg_get_functiondef(p.oid) AS definition, p.proacl::text AS acl
           FROM pg_proc p
          WHERE p.pronamespace = '{SCHEMA}'::regnamespace
         UNION ALL
         SELECT 'view', c.relname::text, c.relname::text,
                format(E'CREATE OR REPLACE VIEW %s%s AS\\n%s', c.relname,
                       COALESCE(' WITH (' || array_to_string(c.reloptions, ', ') || ')', ''),
                       pg_get_viewdef(c.oid, true)),
                c.relacl::text
           FROM pg_class c
          WHERE c.relnamespace = '{SCHEMA}'::regnamespace AND c.relkind = 'v'"
    ))
    .load(conn)
    .expect("read the schema's functions and views");
    rows.into_iter()
        .map(|r| {
            let kind = if r.kind == "view" {
                Kind::View
            } else {
                Kind::Function
            };
            (
                r.identity.clone(),
                Object {
                    kind,
                    name: r.name,
                    identity: r.identity,
                    definition: r.definition,
                    acl: r.acl,
                },
            )
        })
        .collect()
}

/// Runs every file, in order. With `check_bodies` off, as migrations apply them, an SQL
/// function may name one defined later; with it on, every SQL body is checked against the
/// schema. The error names the file.
pub fn apply(
    conn: &mut PgConnection,
    files: &[DefinitionFile],
    check_bodies: bool,
) -> Result<(), String> {
    conn.batch_execute(&format!("SET LOCAL check_function_bodies = {check_bodies}"))
        .map_err(|e| e.to_string())?;
    for file in files {
        conn.batch_execute(&file.text)
            .map_err(|e| format!("{}: {e}", file.path.display()))?;
    }
    Ok(())
}

/// The statement that defines `object` again, as a definition file writes it: unqualified,
/// `SET search_path FROM CURRENT` for the schema's own path.
pub fn definition_text(object: &Object) -> String {
    let mut text = object.definition.trim_end().to_string();
    if object.kind == Kind::Function {
        let qualified = format!("FUNCTION {SCHEMA}.");
        text = text.replacen(&qualified, "FUNCTION ", 1);
        // Only in the header, which ends where the body starts.
        if let Some(body) = text.find("\nAS $") {
            let (header, rest) = text.split_at(body);
            let header = header.replace(
                &format!(" SET search_path TO '{SCHEMA}', 'pg_temp'"),
                " SET search_path FROM CURRENT",
            );
            text = format!("{header}{rest}");
        }
    }
    if !text.ends_with(';') {
        text.push(';');
    }
    text
}

/// The statement that drops `object`.
pub fn drop_text(object: &Object) -> String {
    match object.kind {
        Kind::Function => format!("DROP FUNCTION {};", object.identity),
        Kind::View => format!("DROP VIEW {};", object.identity),
    }
}
