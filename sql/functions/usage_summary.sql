-- usage_summary(user_id, granularity, from, to): a user's personal usage (without an
-- organization) on the local days from..to, per day, week, month or year; see
-- usage_subject_summary().
CREATE OR REPLACE FUNCTION usage_summary(p_user_id bigint, p_granularity text, p_from date, p_to date)
RETURNS TABLE(period_start date, events bigint, tokens bigint, prompt_tokens bigint, completion_tokens bigint, messages bigint, bytes bigint, cost numeric)
LANGUAGE sql
STABLE
SET search_path FROM CURRENT
AS $$
    SELECT * FROM usage_subject_summary(p_user_id, 0, p_granularity, p_from, p_to)
$$;
