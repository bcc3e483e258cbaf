-- usage_subject_pending(user_id, org_id, from, to): one subject's events created in
-- [from, to) that `aggregate` has not counted yet: at or above the watermark
-- (aggregation_watermark) and countable (usage_event_problem). With the books (periods,
-- summaries), which hold every event below the watermark, they make an answer that counts
-- every event the caller's snapshot sees, exactly once: the watermark and the books move
-- together in one transaction. Read through the indexes on (user_id, recorded_xid) of
-- personal events and (org_id, recorded_xid) of organizations' events: a subject's
-- unaggregated events are few, whatever its history. An inlined SQL function.
CREATE OR REPLACE FUNCTION usage_subject_pending(p_user_id bigint, p_org_id bigint, p_from timestamptz, p_to timestamptz)
RETURNS SETOF usage_events
LANGUAGE sql
STABLE
AS $$
    SELECT e.* FROM usage_events e
     WHERE p_org_id = 0 AND e.org_id IS NULL AND e.user_id = p_user_id
       AND e.recorded_xid >= (SELECT w.xid FROM aggregation_watermark w)
       AND e.created_at >= p_from AND e.created_at < p_to
       AND usage_event_problem(e.created_at, e.cost) IS NULL
    UNION ALL
    SELECT e.* FROM usage_events e
     WHERE p_org_id > 0 AND e.org_id = p_org_id
       AND e.recorded_xid >= (SELECT w.xid FROM aggregation_watermark w)
       AND e.created_at >= p_from AND e.created_at < p_to
       AND usage_event_problem(e.created_at, e.cost) IS NULL
$$;
