-- partitions: the bounds of usage_events not yet validated (its CHECK constraints marked
-- NOT VALID, read from pg_constraint) as one SQL condition, `(a) AND (b) …`; `true` when
-- there is none. The rows of the default partition that break it cannot move into a
-- partition of their own month. No binds.
SELECT COALESCE(string_agg('(' || pg_get_expr(conbin, conrelid) || ')', ' AND '), 'true') AS sql
  FROM pg_constraint
 WHERE conrelid = 'usage_events'::regclass AND contype = 'c' AND NOT convalidated
