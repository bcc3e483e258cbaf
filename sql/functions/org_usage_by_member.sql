-- org_usage_by_member(org_id, from, to): the usage spent in an organization on its local days
-- from..to, per member (former members included), the largest token users first.
CREATE OR REPLACE FUNCTION org_usage_by_member(p_org_id bigint, p_from date, p_to date)
RETURNS TABLE(user_id bigint, events bigint, tokens bigint, prompt_tokens bigint, completion_tokens bigint, messages bigint, bytes bigint, cost numeric)
LANGUAGE sql
STABLE
SET search_path FROM CURRENT
AS $$
    SELECT d.user_id, sum(d.events)::bigint, sum(d.tokens)::bigint, sum(d.prompt_tokens)::bigint,
           sum(d.completion_tokens)::bigint, sum(d.messages)::bigint, sum(d.bytes)::bigint,
           sum(d.cost)
      FROM usage_subject_days(0, p_org_id, p_from, p_to) d
     WHERE p_org_id > 0  -- (0, 0) would be user 0's personal usage
     GROUP BY d.user_id
     ORDER BY sum(d.tokens) DESC, d.user_id;
$$;
