//! Upgrades from the layout of releases that kept every object in `public`: before diesel's
//! migrations run, their tables, functions and version rows move into the configured schema.

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, Text};

use super::{DbError, Flag};
use crate::config::SchemaName;

const ADOPT_SQL: &str = include_str!("adopt.sql");

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
    let candidate: Flag = diesel::sql_query(
        "SELECT to_regclass('public.usage_events') IS NOT NULL
            AND to_regclass('public.__diesel_schema_migrations') IS NOT NULL
            AND to_regclass(format('%I.usage_events', $1::text)) IS NULL AS value",
    )
    .bind::<Text, _>(schema.as_str())
    .get_result(conn)?;
    if !candidate.value {
        return Ok(());
    }
    let ours: Flag = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM public.__diesel_schema_migrations WHERE version = $1)
             AS value",
    )
    .bind::<Text, _>(first)
    .get_result(conn)?;
    if !ours.value {
        return Ok(());
    }
    conn.transaction(|conn| {
        conn.batch_execute(ADOPT_SQL)?;
        diesel::sql_query(
            "INSERT INTO __diesel_schema_migrations (version, run_on)
             SELECT version, run_on FROM public.__diesel_schema_migrations
              WHERE version = ANY ($1)
             ON CONFLICT DO NOTHING",
        )
        .bind::<Array<Text>, _>(versions)
        .execute(conn)?;
        diesel::sql_query("DELETE FROM public.__diesel_schema_migrations WHERE version = ANY ($1)")
            .bind::<Array<Text>, _>(versions)
            .execute(conn)?;
        // Ours alone when nothing else is left in it: an application's rows keep it.
        conn.batch_execute(
            "DO $$ BEGIN
                 IF NOT EXISTS (SELECT 1 FROM public.__diesel_schema_migrations) THEN
                     DROP TABLE public.__diesel_schema_migrations;
                 END IF;
             END $$;",
        )
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
