//! Upgrades from the layout of releases that kept every object in `public`: before diesel's
//! migrations run, their tables, functions and version rows move into the configured schema.

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, Text};

use super::{DbError, Flag};
use crate::config::SchemaName;

const CANDIDATE_SQL: &str = include_str!("sql/adopt_candidate.sql");
const OURS_SQL: &str = include_str!("sql/adopt_ours.sql");
const ADOPT_SQL: &str = include_str!("sql/adopt.sql");
const MIGRATION_TABLE_SQL: &str = include_str!("sql/adopt_migration_table.sql");
const VERSIONS_SQL: &str = include_str!("sql/adopt_versions.sql");
const DROP_PUBLIC_MIGRATIONS_SQL: &str = include_str!("sql/adopt_drop_public_migrations.sql");

/// When `public` holds this program's objects (its migration table lists our first version)
/// and `schema` has none yet, moves them into `schema`, with our version rows, in one
/// transaction. The caller holds the migration lock and has set `search_path` to `schema`.
pub(super) fn adopt_public_layout(
    conn: &mut PgConnection,
    schema: &SchemaName,
    versions: &[String],
) -> Result<(), DbError> {
    let Some(first) = versions.first() else {
        return Ok(());
    };
    let candidate: Flag = diesel::sql_query(CANDIDATE_SQL)
        .bind::<Text, _>(schema.as_str())
        .get_result(conn)?;
    if !candidate.value {
        return Ok(());
    }
    let ours: Flag = diesel::sql_query(OURS_SQL)
        .bind::<Text, _>(first)
        .get_result(conn)?;
    if !ours.value {
        return Ok(());
    }
    conn.transaction(|conn| {
        diesel::sql_query(ADOPT_SQL).execute(conn)?;
        diesel::sql_query(MIGRATION_TABLE_SQL).execute(conn)?;
        diesel::sql_query(VERSIONS_SQL)
            .bind::<Array<Text>, _>(versions)
            .execute(conn)?;
        diesel::sql_query("DELETE FROM public.__diesel_schema_migrations WHERE version = ANY ($1)")
            .bind::<Array<Text>, _>(versions)
            .execute(conn)?;
        // Ours alone when nothing else is left in it: an application's rows keep it.
        diesel::sql_query(DROP_PUBLIC_MIGRATIONS_SQL).execute(conn)?;
        Ok(())
    })
    .map_err(|e: diesel::result::Error| {
        DbError::Migration(format!(
            "moving the objects of an earlier release from public into schema {schema} failed \
             ({e}); nothing was moved. Run --migrate as the role that owns them (or a member \
             of it) with CREATE on schema {schema}"
        ))
    })?;
    tracing::info!(
        schema = %schema,
        "moved the tables, functions and migration rows of an earlier release from public"
    );
    Ok(())
}
