-- partitions: the partitions of usage_events (the default one too), from the catalog
-- (pg_inherits, pg_class), by name, each with its bound as PostgreSQL prints it (`DEFAULT`,
-- or `FOR VALUES FROM (…) TO (…)` in the session's time zone) and its size in bytes,
-- indexes and TOAST included. No binds.
SELECT c.relname::text AS name,
       pg_get_expr(c.relpartbound, c.oid) AS bound,
       pg_total_relation_size(c.oid) AS bytes
  FROM pg_inherits i
  JOIN pg_class c ON c.oid = i.inhrelid
 WHERE i.inhparent = 'usage_events'::regclass
 ORDER BY 1
