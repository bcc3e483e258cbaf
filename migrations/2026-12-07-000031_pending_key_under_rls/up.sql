-- The subject key of usage_events_subject_xid_idx (000030) with its organization column as a
-- CASE instead of COALESCE: under row-level security PostgreSQL uses a condition as an index
-- condition only when it cannot leak rows, and it does not know that of COALESCE, so the
-- application's and readers' roles could use the first column only (every organization's
-- pending events, or every personal event of the user in the period). A CASE it does know.
-- Building it takes a SHARE lock on usage_events, as in 000030.
DROP INDEX usage_events_subject_xid_idx;
CREATE INDEX usage_events_subject_xid_idx ON usage_events
    ((CASE WHEN org_id IS NULL THEN user_id ELSE 0 END),
     (CASE WHEN org_id IS NULL THEN 0 ELSE org_id END), recorded_xid);

-- ==== Written by scripts/sql-migration from sql/: the definitions this migration changes ====
SET LOCAL check_function_bodies = off;

-- usage_subject_pending(user_id, org_id, from, to): one subject's events created in
-- [from, to) that `aggregate` has not counted yet: at or above the watermark
-- (aggregation_watermark) and countable (usage_event_problem). With the books (periods,
-- summaries), which hold every event below the watermark, they make an answer that counts
-- every event the caller's snapshot sees, exactly once: the watermark and the books move
-- together in one transaction. The subject is matched by the key of usage_subjects (a user's
-- personal events: (user_id, 0); an organization's: (0, org_id)), written as the expressions
-- of the index usage_events_subject_xid_idx: its scan reads the subject's unaggregated events
-- only, whatever the subject has recorded before in the same range (an index on (user_id,
-- created_at) would read the whole month). Both keys are CASE expressions compared with
-- int8eq, which PostgreSQL counts as leakproof: under row-level security (the application's
-- and readers' roles) it may still use them as index conditions, where it would not use a
-- COALESCE. One scan, with the partitions outside [from, to) pruned. An inlined SQL function.
CREATE OR REPLACE FUNCTION usage_subject_pending(p_user_id bigint, p_org_id bigint, p_from timestamptz, p_to timestamptz)
RETURNS SETOF usage_events
LANGUAGE sql
STABLE
AS $$
    SELECT e.* FROM usage_events e
     WHERE (CASE WHEN e.org_id IS NULL THEN e.user_id ELSE 0 END)
           = CASE WHEN p_org_id > 0 THEN 0 ELSE p_user_id END
       AND (CASE WHEN e.org_id IS NULL THEN 0 ELSE e.org_id END) = p_org_id
       AND e.recorded_xid >= (SELECT w.xid FROM aggregation_watermark w)
       AND e.created_at >= p_from AND e.created_at < p_to
       AND usage_event_problem(e.created_at, e.cost) IS NULL
$$;
