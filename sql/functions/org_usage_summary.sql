-- org_usage_summary(org_id, granularity, from, to): the usage spent in an organization by all
-- its members on its local days from..to, per day, week, month or year; see
-- usage_subject_summary().
CREATE OR REPLACE FUNCTION org_usage_summary(p_org_id bigint, p_granularity text, p_from date, p_to date)
RETURNS TABLE(period_start date, events bigint, tokens bigint, prompt_tokens bigint, completion_tokens bigint, messages bigint, bytes bigint, cost numeric)
LANGUAGE sql
STABLE
SET search_path FROM CURRENT
AS $$
    -- Organization ids are positive: (0, 0) would be user 0's personal usage.
    SELECT * FROM usage_subject_summary(0, p_org_id, p_granularity, p_from, p_to)
     WHERE p_org_id > 0
$$;
