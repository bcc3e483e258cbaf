-- usage_subject_days(user_id, org_id, from, to): the daily summary rows (token_usage_daily)
-- of one subject's usage on the local days from..to (inclusive): a user's personal rows
-- (org_id NULL) for (user, 0), every member's rows in the organization for (0, org). Two
-- branches, one of which a one-time filter switches off, so each reads its own index. An
-- inlined SQL function: callers filter and group it as a table.
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
$$;
