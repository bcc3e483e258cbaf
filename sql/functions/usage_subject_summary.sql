-- usage_subject_summary(user_id, org_id, granularity, from, to): one subject's daily summary
-- over the local days from..to, summed per day, week, month or year (the first day of each
-- as period_start): the body of usage_summary() and org_usage_summary().
CREATE OR REPLACE FUNCTION usage_subject_summary(p_user_id bigint, p_org_id bigint, p_granularity text, p_from date, p_to date)
RETURNS TABLE(period_start date, events bigint, tokens bigint, prompt_tokens bigint, completion_tokens bigint, messages bigint, bytes bigint, cost numeric)
LANGUAGE plpgsql
STABLE
AS $$
BEGIN
    PERFORM usage_summary_check_granularity(p_granularity);
    RETURN QUERY
    SELECT date_trunc(p_granularity, d.day::timestamp)::date,
           sum(d.events)::bigint, sum(d.tokens)::bigint, sum(d.prompt_tokens)::bigint,
           sum(d.completion_tokens)::bigint, sum(d.messages)::bigint, sum(d.bytes)::bigint,
           sum(d.cost)
      FROM usage_subject_days(p_user_id, p_org_id, p_from, p_to) d
     GROUP BY 1
     ORDER BY 1;
END;
$$;
