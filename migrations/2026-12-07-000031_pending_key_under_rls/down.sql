-- ==== Written by scripts/sql-migration: the definitions as they were before ====
SET LOCAL check_function_bodies = off;

CREATE OR REPLACE FUNCTION usage_subject_pending(p_user_id bigint, p_org_id bigint, p_from timestamp with time zone, p_to timestamp with time zone)
 RETURNS SETOF usage_events
 LANGUAGE sql
 STABLE
AS $function$
    SELECT e.* FROM usage_events e
     WHERE (CASE WHEN e.org_id IS NULL THEN e.user_id ELSE 0 END)
           = CASE WHEN p_org_id > 0 THEN 0 ELSE p_user_id END
       AND COALESCE(e.org_id, 0) = p_org_id
       AND e.recorded_xid >= (SELECT w.xid FROM aggregation_watermark w)
       AND e.created_at >= p_from AND e.created_at < p_to
       AND usage_event_problem(e.created_at, e.cost) IS NULL
$function$;
-- ==== End of the written part ====

DROP INDEX usage_events_subject_xid_idx;
CREATE INDEX usage_events_subject_xid_idx ON usage_events
    ((CASE WHEN org_id IS NULL THEN user_id ELSE 0 END), (COALESCE(org_id, 0)), recorded_xid);
