-- ==== Written by scripts/sql-migration: the definitions as they were before ====
SET LOCAL check_function_bodies = off;

CREATE OR REPLACE FUNCTION usage_event_amounts(p_kind text, p_tokens bigint, p_prompt_tokens bigint, p_completion_tokens bigint, p_bytes bigint, p_cost numeric, p_model text, p_at timestamp with time zone)
 RETURNS TABLE(tokens bigint, cost numeric)
 LANGUAGE plpgsql
 STABLE
AS $function$
DECLARE
    v_tokens bigint := LEAST(GREATEST(COALESCE(p_tokens, 0)::numeric,
                                      COALESCE(p_prompt_tokens, 0)::numeric
                                      + COALESCE(p_completion_tokens, 0)::numeric),
                             9223372036854775807);
    v_cost   numeric := p_cost;
BEGIN
    IF v_cost IS NULL THEN
        SELECT p.per_event
             + COALESCE(p_prompt_tokens, 0) * p.per_1k_prompt_tokens / 1000
             + COALESCE(p_completion_tokens, 0) * p.per_1k_completion_tokens / 1000
             + GREATEST(v_tokens - COALESCE(p_prompt_tokens, 0)::numeric
                        - COALESCE(p_completion_tokens, 0)::numeric, 0)
               * p.per_1k_tokens / 1000
             + COALESCE(p_bytes, 0) * p.per_mb / 1048576
          INTO v_cost
          FROM prices p
         WHERE p.kind = p_kind
           AND p.model IN (COALESCE(p_model, ''), '')
           AND p.valid_from <= p_at
         ORDER BY (p.model = '') ASC, p.valid_from DESC
         LIMIT 1;
    END IF;
    -- Within numeric(20, 8) but past the bounds, so usage_events_cost_in_range (or
    -- _not_negative) refuses it; NaN stays NaN, which the bound refuses as well.
    IF v_cost <> 'NaN'::numeric THEN
        v_cost := GREATEST(LEAST(v_cost, 100000000000), -1);
    END IF;
    tokens := v_tokens;
    cost := COALESCE(v_cost, 0);
    RETURN NEXT;
END;
$function$;

CREATE OR REPLACE FUNCTION usage_record(p_user_id bigint, p_kind text, p_tokens bigint DEFAULT 0, p_prompt_tokens bigint DEFAULT 0, p_completion_tokens bigint DEFAULT 0, p_messages integer DEFAULT 0, p_bytes bigint DEFAULT 0, p_cost numeric DEFAULT NULL::numeric, p_request_type text DEFAULT ''::text, p_model text DEFAULT ''::text, p_metadata jsonb DEFAULT '{}'::jsonb, p_created_at timestamp with time zone DEFAULT now(), p_org_id bigint DEFAULT NULL::bigint, p_idempotency_key text DEFAULT NULL::text)
 RETURNS bigint
 LANGUAGE plpgsql
 SET search_path FROM CURRENT
AS $function$
DECLARE
    v_tokens bigint;
    v_cost   numeric;
    v_id     bigint;
    v_claim  bigint;
    v_subject record;
BEGIN
    SELECT a.tokens, a.cost INTO v_tokens, v_cost
      FROM usage_event_amounts(p_kind, p_tokens, p_prompt_tokens, p_completion_tokens, p_bytes,
                               p_cost, p_model, p_created_at) a;
    SELECT x.* INTO v_subject FROM usage_event_subject(p_user_id, p_org_id) x;
    v_id := nextval('usage_events_id_seq');
    IF p_idempotency_key IS NOT NULL THEN
        -- Claim the key for this event. A concurrent call with the same key waits here for
        -- the first to commit, then finds the key taken; a key older than the window is
        -- taken over. Either way exactly one event carries the key, and a retry is answered
        -- with it before any limit is checked.
        INSERT INTO usage_idempotency_keys AS k
               (org_id, user_id, idempotency_key, event_id, event_created_at)
        VALUES (COALESCE(p_org_id, 0), p_user_id, p_idempotency_key, v_id, p_created_at)
        ON CONFLICT (org_id, scope_user_id, idempotency_key) DO UPDATE
           SET user_id = EXCLUDED.user_id, event_id = EXCLUDED.event_id,
               event_created_at = EXCLUDED.event_created_at, recorded_at = now()
         WHERE k.recorded_at < now() - make_interval(days => (SELECT s.idempotency_days FROM usage_settings s))
        RETURNING k.event_id INTO v_claim;
        IF v_claim IS NULL THEN
            SELECT k.event_id INTO v_claim
              FROM usage_idempotency_keys k
             WHERE k.org_id = v_subject.org_id
               AND k.scope_user_id = v_subject.user_id
               AND k.idempotency_key = p_idempotency_key;
            RETURN v_claim;
        END IF;
    END IF;
    -- After the claim: a retry whose user has left the organization since still gets its
    -- event's id; a refusal here rolls the claim back with the call.
    PERFORM usage_member_check(p_user_id, p_org_id);
    -- Hard limits, only for a subject whose plan has one that an event of this kind adds to.
    IF EXISTS (SELECT 1 FROM usage_subjects su
                 JOIN plan_limits l ON l.plan_id = su.plan_id
                WHERE su.user_id = v_subject.user_id AND su.org_id = v_subject.org_id
                  AND l.enforcement = 'hard' AND (l.kind = '' OR l.kind = p_kind)) THEN
        -- A bad event is refused for what it is, as the insert would, before any limit.
        PERFORM usage_event_check(p_kind, COALESCE(p_request_type, ''), COALESCE(p_model, ''),
                                  COALESCE(p_metadata, '{}'), p_created_at, v_tokens,
                                  COALESCE(p_prompt_tokens, 0), COALESCE(p_completion_tokens, 0),
                                  COALESCE(p_messages, 0), COALESCE(p_bytes, 0), v_cost, p_org_id);
        PERFORM usage_enforce_hard_limits(v_subject.user_id, v_subject.org_id, p_kind,
                                          p_created_at, COALESCE(p_messages, 0), v_tokens,
                                          COALESCE(p_bytes, 0), v_cost);
    END IF;
    INSERT INTO usage_events (id, user_id, org_id, kind, request_type, model, tokens, prompt_tokens,
                              completion_tokens, messages, bytes, cost, metadata, created_at)
    VALUES (v_id, p_user_id, p_org_id, p_kind, COALESCE(p_request_type, ''), COALESCE(p_model, ''),
            v_tokens, COALESCE(p_prompt_tokens, 0), COALESCE(p_completion_tokens, 0),
            COALESCE(p_messages, 0), COALESCE(p_bytes, 0), v_cost,
            COALESCE(p_metadata, '{}'), p_created_at);
    RETURN v_id;
END;
$function$;
-- ==== End of the written part ====
