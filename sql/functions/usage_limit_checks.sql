-- usage_limit_checks(user_id, org_id, kind, at, messages, tokens, bytes, cost): every limit of
-- the subject's plan that an event of `kind` at `at` with these amounts adds to (a limit over
-- all kinds or over `kind`; `requests` always, each event being one; the others when the
-- event's amount is above 0), with what is used now (usage_subject_status: every event the
-- snapshot sees), the event's amount, what the subject's active grants have left (`balance`)
-- and whether it fits: what the event takes past the plan's limit (all of it once the limit
-- is reached) is at most the balance, used + amount <= greatest(limit, used) + balance. So a
-- limit of 0 with no grant refuses every event that adds to its metric. What usage_record() enforces (hard
-- limits) and usage_check() answers (every limit).
CREATE OR REPLACE FUNCTION usage_limit_checks(p_user_id bigint, p_org_id bigint, p_kind text, p_at timestamptz, p_messages numeric, p_tokens numeric, p_bytes numeric, p_cost numeric)
RETURNS TABLE(metric text, period text, kind text, enforcement text, limit_value numeric, used numeric, amount numeric, fits boolean, period_end timestamptz, balance numeric)
LANGUAGE sql
STABLE
AS $$
    SELECT s.metric, s.period, s.kind, s.enforcement, s.limit_value, s.used, a.amount,
           s.used + a.amount <= GREATEST(s.limit_value, s.used) + s.grant_remaining, s.period_end,
           s.grant_remaining
      FROM usage_subject_status(p_user_id, p_org_id, p_at) s
      JOIN (VALUES ('requests', 1::numeric), ('messages', p_messages), ('tokens', p_tokens),
                   ('bytes', p_bytes), ('cost', p_cost)) AS a (metric, amount)
        ON a.metric = s.metric
     WHERE NOT s.unlimited AND (s.kind = '' OR s.kind = p_kind) AND a.amount > 0
$$;
