-- usage_record(user_id, kind, ...): records one usage event and returns its id: what an
-- application calls instead of a plain INSERT INTO usage_events.
-- - Without p_cost the prices table decides: per event + per 1k prompt and completion
--   tokens + per 1k of the remaining tokens + per MB. tokens becomes at least
--   prompt_tokens + completion_tokens.
-- - Amounts past the column types are passed on clamped, so the insert fails on the named
--   bound (usage_events_*_in_range) that a plain INSERT of the same event names.
-- - p_org_id: the usage is spent in that organization; the user must be a member
--   (SQLSTATE 23503, usage_record_org_member), else nothing is recorded.
-- - p_idempotency_key: a key seen within ingest.idempotency_days returns the first event's
--   id and records nothing (usage_idempotency_keys); concurrent retries wait for the first.
CREATE OR REPLACE FUNCTION usage_record(p_user_id bigint, p_kind text, p_tokens bigint DEFAULT 0, p_prompt_tokens bigint DEFAULT 0, p_completion_tokens bigint DEFAULT 0, p_messages integer DEFAULT 0, p_bytes bigint DEFAULT 0, p_cost numeric DEFAULT NULL::numeric, p_request_type text DEFAULT ''::text, p_model text DEFAULT ''::text, p_metadata jsonb DEFAULT '{}'::jsonb, p_created_at timestamptz DEFAULT now(), p_org_id bigint DEFAULT NULL::bigint, p_idempotency_key text DEFAULT NULL::text)
RETURNS bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_tokens bigint := LEAST(GREATEST(COALESCE(p_tokens, 0)::numeric,
                                      COALESCE(p_prompt_tokens, 0)::numeric
                                      + COALESCE(p_completion_tokens, 0)::numeric),
                             9223372036854775807);
    v_cost   numeric := p_cost;
    v_id     bigint;
    v_claim  bigint;
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
           AND p.valid_from <= p_created_at
         ORDER BY (p.model = '') ASC, p.valid_from DESC
         LIMIT 1;
    END IF;
    -- Within numeric(20, 8) but past the bounds, so usage_events_cost_in_range (or
    -- _not_negative) refuses it; NaN stays NaN, which the bound refuses as well.
    IF v_cost <> 'NaN'::numeric THEN
        v_cost := GREATEST(LEAST(v_cost, 100000000000), -1);
    END IF;
    v_id := nextval('usage_events_id_seq');
    IF p_idempotency_key IS NOT NULL THEN
        -- Claim the key for this event. A concurrent call with the same key waits here for
        -- the first to commit, then finds the key taken; a key older than the window is
        -- taken over. Either way exactly one event carries the key.
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
             WHERE k.org_id = COALESCE(p_org_id, 0)
               AND k.scope_user_id = CASE WHEN p_org_id IS NULL THEN p_user_id ELSE 0 END
               AND k.idempotency_key = p_idempotency_key;
            RETURN v_claim;
        END IF;
    END IF;
    -- After the claim: a retry whose user has left the organization since still gets its
    -- event's id; a refusal here rolls the claim back with the call.
    IF p_org_id IS NOT NULL AND NOT EXISTS (
           SELECT 1 FROM organization_members m WHERE m.org_id = p_org_id AND m.user_id = p_user_id) THEN
        RAISE EXCEPTION 'usage_record: user % is not a member of organization %', p_user_id, p_org_id
              USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'usage_record_org_member',
                    HINT = 'add the user to organization_members, or record the usage as personal (p_org_id => NULL)';
    END IF;
    INSERT INTO usage_events (id, user_id, org_id, kind, request_type, model, tokens, prompt_tokens,
                              completion_tokens, messages, bytes, cost, metadata, created_at)
    VALUES (v_id, p_user_id, p_org_id, p_kind, COALESCE(p_request_type, ''), COALESCE(p_model, ''),
            v_tokens, COALESCE(p_prompt_tokens, 0), COALESCE(p_completion_tokens, 0),
            COALESCE(p_messages, 0), COALESCE(p_bytes, 0), COALESCE(v_cost, 0),
            COALESCE(p_metadata, '{}'), p_created_at);
    RETURN v_id;
END;
$$;
