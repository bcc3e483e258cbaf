-- Quota answers that count every event the caller sees, and hard limits.
--
-- plan_limits.enforcement: 'soft' (the default: reported, alerted) or 'hard' (usage_record()
-- refuses an event that would pass it, SQLSTATE UQ001).
--
-- The answers (quota_status(), the summaries) add each subject's events not yet aggregated
-- (recorded_xid at or above the watermark) to the books: two indexes find them by subject
-- and transaction id. They replace (user_id, kind, created_at), which no query of the worker
-- used, so an insert still updates as many indexes as before. Building them takes a SHARE
-- lock on usage_events: inserts wait until the migration commits.
--
-- quota_status() and org_quota_status() gain the column `enforcement`: a new result type,
-- so they are dropped and created again (written part below).
ALTER TABLE plan_limits ADD COLUMN enforcement text NOT NULL DEFAULT 'soft'
    CONSTRAINT plan_limits_enforcement_check CHECK (enforcement IN ('soft', 'hard'));

DROP INDEX usage_events_user_kind_created_idx;
CREATE INDEX usage_events_user_xid_idx ON usage_events (user_id, recorded_xid)
    WHERE org_id IS NULL;
CREATE INDEX usage_events_org_xid_idx ON usage_events (org_id, recorded_xid)
    WHERE org_id IS NOT NULL;

DROP FUNCTION quota_status(bigint, timestamptz);
DROP FUNCTION org_quota_status(bigint, timestamptz);
DROP FUNCTION usage_subject_status(bigint, bigint, timestamptz);

-- ==== Written by scripts/sql-migration from sql/: the definitions this migration changes ====
SET LOCAL check_function_bodies = off;

-- org_quota_status(org_id, at = now()): an organization's shared quota state at `at`, in its
-- own zone and billing anchor; see usage_subject_status(). Nothing when the organization is
-- not in organizations, or not visible to the caller (row-level security).
CREATE OR REPLACE FUNCTION org_quota_status(p_org_id bigint, p_at timestamptz DEFAULT now())
RETURNS TABLE(metric text, period text, kind text, used numeric, limit_value numeric, remaining numeric, unlimited boolean, exceeded boolean, percent numeric, period_start timestamptz, period_end timestamptz, enforcement text)
LANGUAGE sql
STABLE
SET search_path FROM CURRENT
AS $$
    -- Organization ids are positive: (0, 0) would be user 0's personal usage.
    SELECT * FROM usage_subject_status(0, p_org_id, p_at) WHERE p_org_id > 0
$$;

-- quota_status(user_id, at = now()): a user's personal quota state (usage without an
-- organization) at `at`; see usage_subject_status(). Nothing when the user is not in users.
CREATE OR REPLACE FUNCTION quota_status(p_user_id bigint, p_at timestamptz DEFAULT now())
RETURNS TABLE(metric text, period text, kind text, used numeric, limit_value numeric, remaining numeric, unlimited boolean, exceeded boolean, percent numeric, period_start timestamptz, period_end timestamptz, enforcement text)
LANGUAGE sql
STABLE
SET search_path FROM CURRENT
AS $$
    SELECT * FROM usage_subject_status(p_user_id, 0, p_at)
$$;

-- usage_check(...): whether an event would fit the limits of its subject's plan, before it
-- happens: the pre-flight of usage_record(), which takes the same arguments (those that do not
-- change the answer — request type, metadata, idempotency key — are accepted and ignored).
-- One row:
-- - `fits`: every limit the event adds to (usage_limit_checks: `requests` always, the other
--   metrics when its amount is above 0; soft and hard alike) holds used + amount <= limit,
--   counting every event the caller's snapshot sees;
-- - the limit that stops it (hard ones first), or, when it fits, the one with the least room
--   left after it; NULL columns when no limit applies (unlimited);
-- - `remaining`: what that limit has left now; `resets_at`: when its period ends.
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
              (l.limit_value - l.used - l.amount) / NULLIF(l.limit_value, 0) NULLS FIRST,
              l.period, l.metric, l.kind
     LIMIT 1;
    IF NOT FOUND THEN
        RETURN QUERY SELECT true, NULL::text, NULL::text, NULL::text, NULL::text,
                            NULL::numeric, NULL::numeric, NULL::numeric, NULL::timestamptz;
        RETURN;
    END IF;
    RETURN QUERY SELECT c.fits, c.metric, c.period, c.kind, c.enforcement, c.limit_value, c.used,
                        GREATEST(c.limit_value - c.used, 0), c.period_end;
END;
$$;

-- usage_enforce_hard_limits(user_id, org_id, kind, at, messages, tokens, bytes, cost): refuses
-- an event that would take its subject past a hard limit of its plan (usage_limit_checks),
-- with SQLSTATE UQ001 and a message naming the subject, metric, period, kind, limit, what is
-- used and when the period resets. Called by usage_record() before it inserts, only for a
-- subject whose plan has a hard limit.
-- - Atomic under concurrency: it first takes a transaction lock of the subject (advisory
--   class 0x5551 'UQ', key a hash of the subject), so calls for one subject check one at a
--   time, each after the one before has committed or rolled back; the check is a statement
--   of its own, whose fresh snapshot (READ COMMITTED) sees that event.
-- - A REPEATABLE READ transaction keeps the snapshot it started with and would not see the
--   events recorded meanwhile: refused (SQLSTATE UQ002). SERIALIZABLE is safe: PostgreSQL
--   fails one of two conflicting calls with a serialization failure, to be retried.
CREATE OR REPLACE FUNCTION usage_enforce_hard_limits(p_user_id bigint, p_org_id bigint, p_kind text, p_at timestamptz, p_messages numeric, p_tokens numeric, p_bytes numeric, p_cost numeric)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    r       record;
    v_who   text := CASE WHEN p_org_id > 0 THEN 'organization ' || p_org_id ELSE 'user ' || p_user_id END;
    v_zone  text;
BEGIN
    IF current_setting('transaction_isolation') = 'repeatable read' THEN
        RAISE EXCEPTION 'usage_record: the hard limits of % cannot be enforced in a REPEATABLE READ transaction, whose snapshot does not see the events recorded since it began', v_who
              USING ERRCODE = 'UQ002',
                    HINT = 'call usage_record() in a READ COMMITTED (the default) or SERIALIZABLE transaction';
    END IF;
    PERFORM pg_advisory_xact_lock(21841, hashtext(p_user_id::text || ':' || p_org_id::text));
    SELECT c.* INTO r
      FROM usage_limit_checks(p_user_id, p_org_id, p_kind, p_at, p_messages, p_tokens, p_bytes, p_cost) c
     WHERE c.enforcement = 'hard' AND NOT c.fits
     ORDER BY c.period, c.metric, c.kind
     LIMIT 1;
    IF FOUND THEN
        SELECT usage_timezone_or_utc(s.timezone) INTO v_zone
          FROM usage_subjects s WHERE s.user_id = p_user_id AND s.org_id = p_org_id;
        RAISE EXCEPTION 'usage_record: hard limit reached for %: % per % (%) is %, % used, this event adds %; it resets at % %',
              v_who, r.metric, r.period, CASE WHEN r.kind = '' THEN 'all kinds' ELSE 'kind ' || r.kind END,
              r.limit_value, r.used, r.amount,
              to_char(r.period_end AT TIME ZONE COALESCE(v_zone, 'UTC'), 'YYYY-MM-DD HH24:MI:SS'),
              COALESCE(v_zone, 'UTC')
              USING ERRCODE = 'UQ001',
                    DETAIL = format('metric=%s period=%s kind=%s limit=%s used=%s amount=%s resets_at=%s',
                                    r.metric, r.period, r.kind, r.limit_value, r.used, r.amount,
                                    to_char(r.period_end AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')),
                    HINT = 'nothing was recorded; the limit is plan_limits.enforcement = ''hard''';
    END IF;
END;
$$;

-- usage_event_amounts(kind, tokens, prompt_tokens, completion_tokens, bytes, cost, model, at):
-- what an event given to usage_record() or usage_check() amounts to: `tokens` at least
-- prompt + completion tokens, and `cost` as given or, when NULL, from the prices table (per
-- event + per 1k prompt and completion tokens + per 1k of the remaining tokens + per MB; the
-- row for the model, else the kind's, with the latest valid_from at or before `at`).
-- Amounts past the column types come back clamped just past the bounds, so the constraint
-- that names the bound refuses them (usage_events_*_in_range), as for a plain INSERT.
CREATE OR REPLACE FUNCTION usage_event_amounts(p_kind text, p_tokens bigint, p_prompt_tokens bigint, p_completion_tokens bigint, p_bytes bigint, p_cost numeric, p_model text, p_at timestamptz)
RETURNS TABLE(tokens bigint, cost numeric)
LANGUAGE plpgsql
STABLE
AS $$
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
$$;

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

-- usage_limit_checks(user_id, org_id, kind, at, messages, tokens, bytes, cost): every limit of
-- the subject's plan that an event of `kind` at `at` with these amounts adds to (a limit over
-- all kinds or over `kind`; `requests` always, each event being one; the others when the
-- event's amount is above 0), with what is used now (usage_subject_status: every event the
-- snapshot sees), the event's amount, and whether it fits: used + amount <= limit. So a limit
-- of 0 refuses every event that adds to its metric. What usage_record() enforces (hard
-- limits) and usage_check() answers (every limit).
CREATE OR REPLACE FUNCTION usage_limit_checks(p_user_id bigint, p_org_id bigint, p_kind text, p_at timestamptz, p_messages numeric, p_tokens numeric, p_bytes numeric, p_cost numeric)
RETURNS TABLE(metric text, period text, kind text, enforcement text, limit_value numeric, used numeric, amount numeric, fits boolean, period_end timestamptz)
LANGUAGE sql
STABLE
AS $$
    SELECT s.metric, s.period, s.kind, s.enforcement, s.limit_value, s.used, a.amount,
           s.used + a.amount <= s.limit_value, s.period_end
      FROM usage_subject_status(p_user_id, p_org_id, p_at) s
      JOIN (VALUES ('requests', 1::numeric), ('messages', p_messages), ('tokens', p_tokens),
                   ('bytes', p_bytes), ('cost', p_cost)) AS a (metric, amount)
        ON a.metric = s.metric
     WHERE NOT s.unlimited AND (s.kind = '' OR s.kind = p_kind) AND a.amount > 0
$$;

-- usage_member_check(user_id, org_id): refuses usage in an organization by a user who is not
-- one of its members (SQLSTATE 23503, constraint usage_record_org_member); nothing for
-- personal usage (org_id NULL). What usage_record() and usage_check() check first.
CREATE OR REPLACE FUNCTION usage_member_check(p_user_id bigint, p_org_id bigint)
RETURNS void
LANGUAGE plpgsql
STABLE
AS $$
BEGIN
    IF p_org_id IS NOT NULL AND NOT EXISTS (
           SELECT 1 FROM organization_members m WHERE m.org_id = p_org_id AND m.user_id = p_user_id) THEN
        RAISE EXCEPTION 'usage_record: user % is not a member of organization %', p_user_id, p_org_id
              USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'usage_record_org_member',
                    HINT = 'add the user to organization_members, or record the usage as personal (p_org_id => NULL)';
    END IF;
END;
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
$$;

-- usage_subject_days(user_id, org_id, from, to): one subject's usage on the local days
-- from..to (inclusive), as rows of token_usage_daily: a user's personal rows (org_id NULL)
-- for (user, 0), every member's rows in the organization for (0, org), plus one row per event
-- `aggregate` has not counted yet (usage_subject_pending: `events` 1, its local day in the
-- subject's zone, as `aggregate` will count it). Callers sum them: every event the caller's
-- snapshot sees, counted once. The two summary branches are switched by one-time filters, so
-- each reads its own index. An inlined SQL function: callers filter and group it as a table.
CREATE OR REPLACE FUNCTION usage_subject_days(p_user_id bigint, p_org_id bigint, p_from date, p_to date)
RETURNS SETOF token_usage_daily
LANGUAGE sql
STABLE
AS $$
    SELECT d.* FROM token_usage_daily d
     WHERE p_org_id = 0 AND d.user_id = p_user_id AND d.org_id IS NULL
       AND d.day BETWEEN p_from AND p_to
    UNION ALL
    SELECT d.* FROM token_usage_daily d
     WHERE p_org_id > 0 AND d.org_id = p_org_id
       AND d.day BETWEEN p_from AND p_to
    UNION ALL
    SELECT e.user_id, (e.created_at AT TIME ZONE z.zone)::date, e.kind, e.request_type, e.model,
           1, e.tokens, e.prompt_tokens, e.completion_tokens, e.messages, e.bytes, e.cost,
           e.org_id, COALESCE(e.org_id, 0)
      FROM (SELECT usage_timezone_or_utc((SELECT s.timezone FROM usage_subjects s
                                           WHERE s.user_id = p_user_id
                                             AND s.org_id = p_org_id)) AS zone) z
     CROSS JOIN LATERAL usage_subject_pending(p_user_id, p_org_id,
                                              usage_local_midnight(p_from, z.zone),
                                              usage_local_midnight(p_to + 1, z.zone)) e
$$;

-- usage_subject_pending(user_id, org_id, from, to): one subject's events created in
-- [from, to) that `aggregate` has not counted yet: at or above the watermark
-- (aggregation_watermark) and countable (usage_event_problem). With the books (periods,
-- summaries), which hold every event below the watermark, they make an answer that counts
-- every event the caller's snapshot sees, exactly once: the watermark and the books move
-- together in one transaction. Read through the indexes on (user_id, recorded_xid) of
-- personal events and (org_id, recorded_xid) of organizations' events: a subject's
-- unaggregated events are few, whatever its history. An inlined SQL function.
CREATE OR REPLACE FUNCTION usage_subject_pending(p_user_id bigint, p_org_id bigint, p_from timestamptz, p_to timestamptz)
RETURNS SETOF usage_events
LANGUAGE sql
STABLE
AS $$
    SELECT e.* FROM usage_events e
     WHERE p_org_id = 0 AND e.org_id IS NULL AND e.user_id = p_user_id
       AND e.recorded_xid >= (SELECT w.xid FROM aggregation_watermark w)
       AND e.created_at >= p_from AND e.created_at < p_to
       AND usage_event_problem(e.created_at, e.cost) IS NULL
    UNION ALL
    SELECT e.* FROM usage_events e
     WHERE p_org_id > 0 AND e.org_id = p_org_id
       AND e.recorded_xid >= (SELECT w.xid FROM aggregation_watermark w)
       AND e.created_at >= p_from AND e.created_at < p_to
       AND usage_event_problem(e.created_at, e.cost) IS NULL
$$;

-- usage_subject_status(user_id, org_id, at): the quota state of one subject (a user's
-- personal usage: (user, 0); an organization's: (0, org)) at `at`, the body of quota_status()
-- and org_quota_status(). One row per metric and period kind over all event kinds, and one
-- per kind-scoped limit of the subject's plan:
-- - `used`: every event of the period containing `at` that the caller's snapshot sees,
--   whether `aggregate` has counted it or not: the period's totals (usage_periods,
--   usage_period_kind_totals) plus the subject's events not yet counted
--   (usage_subject_pending), each event once.
-- - the period: the subject's open or closed period containing `at`, or, where none has
--   been opened yet, its natural period after any earlier one.
-- - `limit_value` (NULL: unlimited), what remains, and `enforcement` (`soft` or `hard`; NULL
--   when unlimited).
-- No row when the subject is not in usage_subjects. STABLE: every statement reads one
-- snapshot, so the totals and the watermark that splits counted from pending agree.
CREATE OR REPLACE FUNCTION usage_subject_status(p_user_id bigint, p_org_id bigint, p_at timestamptz)
RETURNS TABLE(metric text, period text, kind text, used numeric, limit_value numeric, remaining numeric, unlimited boolean, exceeded boolean, percent numeric, period_start timestamptz, period_end timestamptz, enforcement text)
LANGUAGE plpgsql
STABLE
AS $$
#variable_conflict use_column
DECLARE
    c_start    timestamptz;
    c_end      timestamptz;
    c_requests bigint;
    c_messages bigint;
    c_tokens   bigint;
    c_bytes    bigint;
    c_cost     numeric;
    b          record;
    per    text;
    p_from timestamptz;
    p_to   timestamptz;
    known  boolean;
    p_tz     text;
    p_anchor integer;
    p_plan   bigint;
BEGIN
    SELECT su.timezone, su.billing_anchor_day, su.plan_id INTO p_tz, p_anchor, p_plan
      FROM usage_subjects su
     WHERE su.user_id = p_user_id AND su.org_id = p_org_id;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    FOREACH per IN ARRAY ARRAY['day', 'month'] LOOP
        -- The latest period starting at or before `at`: the current one if it has not ended.
        SELECT up.period_start, up.period_end, up.requests, up.messages, up.tokens, up.bytes, up.cost
          INTO c_start, c_end, c_requests, c_messages, c_tokens, c_bytes, c_cost
          FROM usage_periods up
         WHERE up.user_id = p_user_id AND up.org_id = p_org_id AND up.period = per
           AND up.period_start <= p_at
         ORDER BY up.period_start DESC
         LIMIT 1;
        known := FOUND AND c_end > p_at;
        IF known THEN
            p_from := c_start;
            p_to := c_end;
        ELSE
            -- Nothing counted yet in this period: its natural bounds, after any earlier one.
            b := usage_period_bounds(p_tz, p_anchor, per, p_at);
            SELECT t.period_start, t.period_end INTO p_from, p_to
              FROM usage_period_between(b.period_start, b.period_end, c_end, NULL) t;
        END IF;
        -- The five totals over all kinds, then one row per kind-scoped limit: UNION ALL and one
        -- small sort, no de-duplication. Each is the counted total plus the pending events.
        RETURN QUERY
        WITH pending AS MATERIALIZED (
            SELECT e.kind, count(*)::numeric AS requests, sum(e.messages)::numeric AS messages,
                   sum(e.tokens)::numeric AS tokens, sum(e.bytes)::numeric AS bytes,
                   sum(e.cost) AS cost
              FROM usage_subject_pending(p_user_id, p_org_id, p_from, p_to) e
             GROUP BY e.kind
        ), pending_all AS (
            SELECT COALESCE(sum(requests), 0) AS requests, COALESCE(sum(messages), 0) AS messages,
                   COALESCE(sum(tokens), 0) AS tokens, COALESCE(sum(bytes), 0) AS bytes,
                   COALESCE(sum(cost), 0) AS cost
              FROM pending
        )
        SELECT x.metric, per, x.kind, x.used, x.limit_value,
               CASE WHEN x.limit_value IS NOT NULL THEN GREATEST(x.limit_value - x.used, 0) END,
               x.limit_value IS NULL,
               COALESCE(x.used >= x.limit_value, false),
               CASE WHEN x.limit_value IS NULL THEN NULL
                    WHEN x.limit_value = 0 THEN 100::numeric
                    ELSE round(x.used * 100 / x.limit_value, 2) END,
               p_from, p_to, x.enforcement
          FROM (SELECT m.metric, ''::text AS kind,
                       CASE WHEN NOT known THEN 0::numeric ELSE m.used END + m.pending AS used,
                       l.max_value AS limit_value, l.enforcement
                  FROM pending_all pa
                 CROSS JOIN LATERAL (VALUES ('bytes', c_bytes::numeric, pa.bytes),
                                            ('cost', c_cost, pa.cost),
                                            ('messages', c_messages::numeric, pa.messages),
                                            ('requests', c_requests::numeric, pa.requests),
                                            ('tokens', c_tokens::numeric, pa.tokens))
                       AS m (metric, used, pending)
                  LEFT JOIN plan_limits l
                    ON l.plan_id = p_plan AND l.period = per AND l.kind = '' AND l.metric = m.metric
                UNION ALL
                SELECT l.metric, l.kind,
                       COALESCE(CASE l.metric WHEN 'requests' THEN k.requests::numeric
                                              WHEN 'messages' THEN k.messages::numeric
                                              WHEN 'tokens' THEN k.tokens::numeric
                                              WHEN 'bytes' THEN k.bytes::numeric
                                              ELSE k.cost END, 0)
                       + COALESCE(CASE l.metric WHEN 'requests' THEN pk.requests
                                                WHEN 'messages' THEN pk.messages
                                                WHEN 'tokens' THEN pk.tokens
                                                WHEN 'bytes' THEN pk.bytes
                                                ELSE pk.cost END, 0),
                       l.max_value, l.enforcement
                  FROM plan_limits l
                  LEFT JOIN usage_period_kind_totals k
                    ON known AND k.user_id = p_user_id AND k.org_id = p_org_id AND k.period = per
                   AND k.period_start = p_from AND k.kind = l.kind
                  LEFT JOIN pending pk ON pk.kind = l.kind
                 WHERE l.plan_id = p_plan AND l.period = per AND l.kind <> '') AS x
         ORDER BY x.metric, x.kind;
    END LOOP;
END;
$$;
