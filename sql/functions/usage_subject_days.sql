-- usage_subject_days(user_id, org_id, from, to): one subject's usage on the local days
-- from..to (inclusive), as rows of token_usage_daily: a user's personal rows (org_id NULL)
-- for (user, 0), every member's rows in the organization for (0, org), plus one row per event
-- `aggregate` has not counted yet (usage_subject_pending: `events` 1, its local day in the
-- subject's zone, as `aggregate` will count it). Callers sum them: every event the caller's
-- snapshot sees, counted once. The two summary branches are switched by one-time filters, so
-- each reads its own index. An inlined SQL function: callers filter and group it as a table.
CREATE OR REPLACE FUNCTION usage_subject_days(p_user_id bigint, p_org_id bigint, p_from date, p_to date)
RETURNS SETOF token_usage_daily
LANGUAGE sql
STABLE
AS $$
    SELECT d.* FROM token_usage_daily d
     WHERE p_org_id = 0 AND d.user_id = p_user_id AND d.org_id IS NULL
       AND d.day BETWEEN p_from AND p_to
    UNION ALL
    SELECT d.* FROM token_usage_daily d
     WHERE p_org_id > 0 AND d.org_id = p_org_id
       AND d.day BETWEEN p_from AND p_to
    UNION ALL
    SELECT e.user_id, (e.created_at AT TIME ZONE z.zone)::date, e.kind, e.request_type, e.model,
           1, e.tokens, e.prompt_tokens, e.completion_tokens, e.messages, e.bytes, e.cost,
           e.org_id, COALESCE(e.org_id, 0)
      FROM (SELECT usage_timezone_or_utc((SELECT s.timezone FROM usage_subjects s
                                           WHERE s.user_id = p_user_id
                                             AND s.org_id = p_org_id)) AS zone) z
     CROSS JOIN LATERAL usage_subject_pending(p_user_id, p_org_id,
                                              usage_local_midnight(p_from, z.zone),
                                              usage_local_midnight(p_to + 1, z.zone)) e
$$;
