-- Copies the rows of versions $1 (text[]: this program's migrations) from public's diesel
-- migration table into the current schema's, keeping when each ran; a version already there
-- is left alone.
INSERT INTO __diesel_schema_migrations (version, run_on)
SELECT version, run_on FROM public.__diesel_schema_migrations
 WHERE version = ANY ($1)
ON CONFLICT DO NOTHING
