-- Whether the cluster has a database named $1 (reads pg_database).
SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS value
