-- usage_event_subject(user_id, org_id): the subject an event counts for (see usage_subjects):
-- (user_id, 0) for personal usage (org_id NULL), (0, org_id) for usage spent in an
-- organization. The one place this mapping is written; an inlined SQL function, so a join
-- on it costs no call per row.
CREATE OR REPLACE FUNCTION usage_event_subject(p_user_id bigint, p_org_id bigint)
RETURNS TABLE(user_id bigint, org_id bigint)
LANGUAGE sql
IMMUTABLE PARALLEL SAFE
ROWS 1
AS $$
    SELECT CASE WHEN p_org_id IS NULL THEN p_user_id ELSE 0 END, COALESCE(p_org_id, 0)
$$;
