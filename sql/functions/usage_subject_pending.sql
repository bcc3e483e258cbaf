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
