-- usage_event_check(kind, request_type, model, metadata, created_at, tokens, prompt_tokens,
-- completion_tokens, messages, bytes, cost, org_id): refuses an event usage_events would
-- refuse, with the same error: SQLSTATE 23514 (check_violation) naming the same constraint,
-- checked in the same order (alphabetical, as PostgreSQL checks them), and 23502 for a NULL
-- kind. What usage_check() validates its arguments with; usage_record() needs no such
-- check, its insert is refused by the table itself. Keep in step with the constraints of
-- usage_events (the tests compare the two for every constraint).
CREATE OR REPLACE FUNCTION usage_event_check(p_kind text, p_request_type text, p_model text, p_metadata jsonb, p_created_at timestamptz, p_tokens bigint, p_prompt_tokens bigint, p_completion_tokens bigint, p_messages integer, p_bytes bigint, p_cost numeric, p_org_id bigint)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
AS $$
DECLARE
    v_failed text;
BEGIN
    IF p_kind IS NULL THEN
        RAISE EXCEPTION 'null value in column "kind" of relation "usage_events" violates not-null constraint'
              USING ERRCODE = 'not_null_violation', COLUMN = 'kind', TABLE = 'usage_events';
    END IF;
    v_failed := CASE
        WHEN NOT (p_bytes <= 1000000000000) THEN 'usage_events_bytes_in_range'
        WHEN NOT (p_bytes >= 0) THEN 'usage_events_bytes_not_negative'
        WHEN NOT (p_completion_tokens <= 1000000000000) THEN 'usage_events_completion_tokens_in_range'
        WHEN NOT (p_completion_tokens >= 0) THEN 'usage_events_completion_tokens_not_negative'
        WHEN NOT (p_cost <= 1000000000) THEN 'usage_events_cost_in_range'
        WHEN NOT (p_cost >= 0) THEN 'usage_events_cost_not_negative'
        WHEN NOT (p_created_at >= '1990-01-01 00:00:00+00'::timestamptz
                  AND p_created_at < '2200-01-01 00:00:00+00'::timestamptz)
            THEN 'usage_events_created_at_in_range'
        WHEN NOT (p_kind ~ '^[a-z][a-z0-9_]{0,63}$') THEN 'usage_events_kind_check'
        WHEN NOT (p_messages <= 1000000) THEN 'usage_events_messages_in_range'
        WHEN NOT (p_messages >= 0) THEN 'usage_events_messages_not_negative'
        WHEN NOT (octet_length(p_metadata::text) <= 65536) THEN 'usage_events_metadata_size'
        WHEN NOT (length(p_model) <= 200) THEN 'usage_events_model_check'
        WHEN NOT (p_org_id > 0) THEN 'usage_events_org_id_check'
        WHEN NOT (p_prompt_tokens <= 1000000000000) THEN 'usage_events_prompt_tokens_in_range'
        WHEN NOT (p_prompt_tokens >= 0) THEN 'usage_events_prompt_tokens_not_negative'
        WHEN NOT (p_request_type ~ '^([a-z0-9][a-z0-9_.-]{0,63})?$') THEN 'usage_events_request_type_check'
        WHEN NOT (p_tokens <= 1000000000000) THEN 'usage_events_tokens_in_range'
        WHEN NOT (p_tokens >= 0) THEN 'usage_events_tokens_not_negative'
    END;
    IF v_failed IS NOT NULL THEN
        RAISE EXCEPTION 'new row for relation "usage_events" violates check constraint "%"', v_failed
              USING ERRCODE = 'check_violation', CONSTRAINT = v_failed, TABLE = 'usage_events';
    END IF;
END;
$$;
