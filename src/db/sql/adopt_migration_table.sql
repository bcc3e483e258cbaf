-- diesel's own table, as diesel creates it, in the current schema (the first of search_path,
-- the configured one), for the version rows moved from public next. No binds.
CREATE TABLE IF NOT EXISTS __diesel_schema_migrations (
    version VARCHAR(50) PRIMARY KEY NOT NULL,
    run_on  TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
)
