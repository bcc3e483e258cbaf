DROP FUNCTION usage_rebase_watermark(boolean);
DROP TABLE usage_quarantine;
DROP FUNCTION usage_event_problem(timestamptz, numeric);
ALTER TABLE usage_events
    DROP CONSTRAINT usage_events_created_at_in_range,
    DROP CONSTRAINT usage_events_tokens_in_range,
    DROP CONSTRAINT usage_events_prompt_tokens_in_range,
    DROP CONSTRAINT usage_events_completion_tokens_in_range,
    DROP CONSTRAINT usage_events_bytes_in_range,
    DROP CONSTRAINT usage_events_messages_in_range,
    DROP CONSTRAINT usage_events_cost_in_range;

-- usage_record as migration 1 defined it.
CREATE OR REPLACE FUNCTION usage_record(
    p_user_id           bigint,
    p_kind              text,
    p_tokens            bigint  DEFAULT 0,
    p_prompt_tokens     bigint  DEFAULT 0,
    p_completion_tokens bigint  DEFAULT 0,
    p_messages          integer DEFAULT 0,
    p_bytes             bigint  DEFAULT 0,
    p_cost              numeric DEFAULT NULL,
    p_request_type      text    DEFAULT '',
    p_model             text    DEFAULT '',
    p_metadata          jsonb   DEFAULT '{}',
    p_created_at        timestamptz DEFAULT now()
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_tokens bigint := GREATEST(COALESCE(p_tokens, 0),
                                COALESCE(p_prompt_tokens, 0) + COALESCE(p_completion_tokens, 0));
    v_cost   numeric := p_cost;
    v_id     bigint;
BEGIN
    IF v_cost IS NULL THEN
        SELECT p.per_event
             + COALESCE(p_prompt_tokens, 0) * p.per_1k_prompt_tokens / 1000
             + COALESCE(p_completion_tokens, 0) * p.per_1k_completion_tokens / 1000
             + GREATEST(v_tokens - COALESCE(p_prompt_tokens, 0) - COALESCE(p_completion_tokens, 0), 0)
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
    INSERT INTO usage_events (user_id, kind, request_type, model, tokens, prompt_tokens,
                              completion_tokens, messages, bytes, cost, metadata, created_at)
    VALUES (p_user_id, p_kind, COALESCE(p_request_type, ''), COALESCE(p_model, ''), v_tokens,
            COALESCE(p_prompt_tokens, 0), COALESCE(p_completion_tokens, 0), COALESCE(p_messages, 0),
            COALESCE(p_bytes, 0), COALESCE(v_cost, 0), COALESCE(p_metadata, '{}'), p_created_at)
    RETURNING id INTO v_id;
    RETURN v_id;
END;
$$;
