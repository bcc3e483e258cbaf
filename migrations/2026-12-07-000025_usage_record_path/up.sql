-- usage_record()'s path for every call, shorter: the amounts, the subject and whether its plan
-- has a hard limit for the event's kind in one statement; usage_event_amounts() an inlined
-- SQL function whose price is looked up once; the membership check only for usage spent in
-- an organization.
-- ==== Written by scripts/sql-migration from sql/: the definitions this migration changes ====
SET LOCAL check_function_bodies = off;

-- usage_event_amounts(kind, tokens, prompt_tokens, completion_tokens, bytes, cost, model, at):
-- what an event given to usage_record() or usage_check() amounts to: `tokens` at least
-- prompt + completion tokens, and `cost` as given or, when NULL, from the prices table (per
-- event + per 1k prompt and completion tokens + per 1k of the remaining tokens + per MB; the
-- row for the model, else the kind's, with the latest valid_from at or before `at`).
-- Amounts past the column types come back clamped just past the bounds, so the constraint
-- that names the bound refuses them (usage_events_*_in_range), as for a plain INSERT.
-- An inlined SQL function: called in FROM, it costs usage_record() no call of its own, and
-- the price is a join, so it is looked up once (a scalar subquery used three times would be
-- planned three times).
CREATE OR REPLACE FUNCTION usage_event_amounts(p_kind text, p_tokens bigint, p_prompt_tokens bigint, p_completion_tokens bigint, p_bytes bigint, p_cost numeric, p_model text, p_at timestamptz)
RETURNS TABLE(tokens bigint, cost numeric)
LANGUAGE sql
STABLE
AS $$
    SELECT t.tokens,
           -- Within numeric(20, 8) but past the bounds, so usage_events_cost_in_range (or
           -- _not_negative) refuses it; NaN stays NaN, which the bound refuses as well.
           COALESCE(CASE WHEN COALESCE(p_cost, p.cost) <> 'NaN'::numeric
                         THEN GREATEST(LEAST(COALESCE(p_cost, p.cost), 100000000000), -1)
                         ELSE COALESCE(p_cost, p.cost) END, 0)
      FROM (SELECT LEAST(GREATEST(COALESCE(p_tokens, 0)::numeric,
                                  COALESCE(p_prompt_tokens, 0)::numeric
                                  + COALESCE(p_completion_tokens, 0)::numeric),
                         9223372036854775807)::bigint AS tokens) t
      -- The price in force at p_at: the model's row, else the kind's; looked up only without
      -- p_cost. A join, not a scalar subquery, so it is looked up once per call.
      LEFT JOIN LATERAL (
            SELECT p.per_event
                 + COALESCE(p_prompt_tokens, 0) * p.per_1k_prompt_tokens / 1000
                 + COALESCE(p_completion_tokens, 0) * p.per_1k_completion_tokens / 1000
                 + GREATEST(t.tokens - COALESCE(p_prompt_tokens, 0)::numeric
                            - COALESCE(p_completion_tokens, 0)::numeric, 0)
                   * p.per_1k_tokens / 1000
                 + COALESCE(p_bytes, 0) * p.per_mb / 1048576 AS cost
              FROM prices p
             WHERE p.kind = p_kind
               AND p.model IN (COALESCE(p_model, ''), '')
               AND p.valid_from <= p_at
             ORDER BY (p.model = '') ASC, p.valid_from DESC
             LIMIT 1) p ON p_cost IS NULL
$$;

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
-- - Hard limits (plan_limits.enforcement = 'hard'): an event that would take its subject past
--   one is refused with SQLSTATE UQ001 and nothing is recorded (usage_enforce_hard_limits);
--   concurrent calls let exactly the allowed amount through. A plain INSERT is not checked.
CREATE OR REPLACE FUNCTION usage_record(p_user_id bigint, p_kind text, p_tokens bigint DEFAULT 0, p_prompt_tokens bigint DEFAULT 0, p_completion_tokens bigint DEFAULT 0, p_messages integer DEFAULT 0, p_bytes bigint DEFAULT 0, p_cost numeric DEFAULT NULL::numeric, p_request_type text DEFAULT ''::text, p_model text DEFAULT ''::text, p_metadata jsonb DEFAULT '{}'::jsonb, p_created_at timestamptz DEFAULT now(), p_org_id bigint DEFAULT NULL::bigint, p_idempotency_key text DEFAULT NULL::text)
RETURNS bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_tokens bigint;
    v_cost   numeric;
    v_id     bigint;
    v_claim  bigint;
    v_subject_user bigint;
    v_subject_org  bigint;
    v_hard   boolean;
BEGIN
    -- One statement: the amounts, the subject, and whether its plan has a hard limit that an
    -- event of this kind adds to (the insert path of every call; nothing else is looked up).
    SELECT a.tokens, a.cost, s.user_id, s.org_id,
           EXISTS (SELECT 1 FROM usage_subjects su
                     JOIN plan_limits l ON l.plan_id = su.plan_id
                    WHERE su.user_id = s.user_id AND su.org_id = s.org_id
                      AND l.enforcement = 'hard' AND (l.kind = '' OR l.kind = p_kind))
      INTO v_tokens, v_cost, v_subject_user, v_subject_org, v_hard
      FROM usage_event_amounts(p_kind, p_tokens, p_prompt_tokens, p_completion_tokens, p_bytes,
                               p_cost, p_model, p_created_at) a
     CROSS JOIN usage_event_subject(p_user_id, p_org_id) s;
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
             WHERE k.org_id = v_subject_org
               AND k.scope_user_id = v_subject_user
               AND k.idempotency_key = p_idempotency_key;
            RETURN v_claim;
        END IF;
    END IF;
    -- After the claim: a retry whose user has left the organization since still gets its
    -- event's id; a refusal here rolls the claim back with the call.
    IF p_org_id IS NOT NULL THEN
        PERFORM usage_member_check(p_user_id, p_org_id);
    END IF;
    -- Hard limits, only for a subject whose plan has one that an event of this kind adds to.
    IF v_hard THEN
        -- A bad event is refused for what it is, as the insert would, before any limit.
        PERFORM usage_event_check(p_kind, COALESCE(p_request_type, ''), COALESCE(p_model, ''),
                                  COALESCE(p_metadata, '{}'), p_created_at, v_tokens,
                                  COALESCE(p_prompt_tokens, 0), COALESCE(p_completion_tokens, 0),
                                  COALESCE(p_messages, 0), COALESCE(p_bytes, 0), v_cost, p_org_id);
        PERFORM usage_enforce_hard_limits(v_subject_user, v_subject_org, p_kind,
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
$$;
