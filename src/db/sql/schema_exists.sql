-- Whether the database has a schema named $1 (reads pg_namespace).
SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1) AS value
