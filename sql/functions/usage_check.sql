-- usage_check(...): whether an event would fit the limits of its subject's plan, before it
-- happens: the pre-flight of usage_record(), which takes the same arguments (those that do not
-- change the answer — request type, metadata, idempotency key — are accepted and ignored).
-- One row:
-- - `fits`: every limit the event adds to (usage_limit_checks: `requests` always, the other
--   metrics when its amount is above 0; soft and hard alike) holds used + amount <= limit
--   (plus, past the limit, what the subject's active grants have left),
--   counting every event the caller's snapshot sees;
-- - the limit that stops it (hard ones first), or, when it fits, the one with the least room
--   left after it; NULL columns when no limit applies (unlimited);
-- - `remaining`: what that limit has left now, with what the active grants have left (see
--   usage_grant()); `resets_at`: when its period ends.
-- Arguments are refused with the errors usage_record() gives (usage_event_check,
-- usage_member_check). For usage whose amount is known only afterwards (the tokens of an
-- AI answer), check with the least it will use (p_tokens => 1): see docs/SCHEMA.md.
CREATE OR REPLACE FUNCTION usage_check(p_user_id bigint, p_kind text, p_tokens bigint DEFAULT 0, p_prompt_tokens bigint DEFAULT 0, p_completion_tokens bigint DEFAULT 0, p_messages integer DEFAULT 0, p_bytes bigint DEFAULT 0, p_cost numeric DEFAULT NULL::numeric, p_request_type text DEFAULT ''::text, p_model text DEFAULT ''::text, p_metadata jsonb DEFAULT '{}'::jsonb, p_created_at timestamptz DEFAULT now(), p_org_id bigint DEFAULT NULL::bigint, p_idempotency_key text DEFAULT NULL::text)
RETURNS TABLE(fits boolean, metric text, period text, kind text, enforcement text, limit_value numeric, used numeric, remaining numeric, resets_at timestamptz)
LANGUAGE sql
STABLE
SET search_path FROM CURRENT
AS $$
    SELECT * FROM usage_check_event(p_user_id, p_kind, p_tokens, p_prompt_tokens,
                                    p_completion_tokens, p_messages, p_bytes, p_cost,
                                    p_request_type, p_model, p_metadata, p_created_at, p_org_id)
$$;
