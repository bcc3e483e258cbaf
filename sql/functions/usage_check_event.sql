-- usage_check_event(user_id, kind, tokens, prompt_tokens, completion_tokens, messages, bytes,
-- cost, request_type, model, metadata, created_at, org_id): the body of usage_check(), which
-- see; usage_check() also takes the idempotency key, which changes nothing here.
CREATE OR REPLACE FUNCTION usage_check_event(p_user_id bigint, p_kind text, p_tokens bigint, p_prompt_tokens bigint, p_completion_tokens bigint, p_messages integer, p_bytes bigint, p_cost numeric, p_request_type text, p_model text, p_metadata jsonb, p_created_at timestamptz, p_org_id bigint)
RETURNS TABLE(fits boolean, metric text, period text, kind text, enforcement text, limit_value numeric, used numeric, remaining numeric, resets_at timestamptz)
LANGUAGE plpgsql
STABLE
AS $$
DECLARE
    a record;
    s record;
    c record;
BEGIN
    SELECT x.* INTO a
      FROM usage_event_amounts(p_kind, p_tokens, p_prompt_tokens, p_completion_tokens, p_bytes,
                               p_cost, p_model, p_created_at) x;
    -- In usage_record()'s order: membership, then what the table's constraints refuse.
    PERFORM usage_member_check(p_user_id, p_org_id);
    PERFORM usage_event_check(p_kind, COALESCE(p_request_type, ''), COALESCE(p_model, ''),
                              COALESCE(p_metadata, '{}'), p_created_at, a.tokens,
                              COALESCE(p_prompt_tokens, 0), COALESCE(p_completion_tokens, 0),
                              COALESCE(p_messages, 0), COALESCE(p_bytes, 0), a.cost, p_org_id);
    SELECT x.* INTO s FROM usage_event_subject(p_user_id, p_org_id) x;
    SELECT l.* INTO c
      FROM usage_limit_checks(s.user_id, s.org_id, p_kind, p_created_at,
                              COALESCE(p_messages, 0), a.tokens, COALESCE(p_bytes, 0), a.cost) l
     ORDER BY l.fits, l.enforcement = 'hard' DESC,
              (l.limit_value + l.balance - l.used - l.amount) / NULLIF(l.limit_value + l.balance, 0) NULLS FIRST,
              l.period, l.metric, l.kind
     LIMIT 1;
    IF NOT FOUND THEN
        RETURN QUERY SELECT true, NULL::text, NULL::text, NULL::text, NULL::text,
                            NULL::numeric, NULL::numeric, NULL::numeric, NULL::timestamptz;
        RETURN;
    END IF;
    RETURN QUERY SELECT c.fits, c.metric, c.period, c.kind, c.enforcement, c.limit_value, c.used,
                        GREATEST(c.limit_value - c.used, 0) + c.balance, c.period_end;
END;
$$;
