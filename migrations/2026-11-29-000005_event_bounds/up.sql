-- Event bounds: what can never be a valid usage event is refused at insert; what slipped in
-- before (or around) these bounds is set aside by `aggregate` instead of stopping it; and a
-- watermark left ahead of the cluster by a restore can be rebased.

-- Bounds of one event (documented in docs/SCHEMA.md). A finite created_at in 1990..2199:
-- an infinite or far-future date cannot be partitioned, and is almost always a unit bug
-- (milliseconds read as seconds); a date before 1990 is an epoch-zero default or a negative
-- epoch, never usage of a product like this. Amounts capped at 10^12 (messages at 10^6, cost at 10^9
-- in the currency unit): a bigint sum of one summary row then needs over nine million
-- events at the cap before it overflows. `cost <= 1e9` also refuses NaN, which sorts above
-- every number (and so passes cost >= 0).
--
-- NOT VALID: PostgreSQL enforces these on every new row (and on rows the `partitions` job
-- moves) but does not scan existing rows, so this migration cannot fail on old data and
-- takes no long lock. Old rows that cannot be counted are set aside by `aggregate`
-- (usage_quarantine); once they are cleaned up an operator may VALIDATE CONSTRAINT.
ALTER TABLE usage_events
    ADD CONSTRAINT usage_events_created_at_in_range
        CHECK (created_at >= '1990-01-01 00:00:00+00' AND created_at < '2200-01-01 00:00:00+00') NOT VALID,
    ADD CONSTRAINT usage_events_tokens_in_range CHECK (tokens <= 1000000000000) NOT VALID,
    ADD CONSTRAINT usage_events_prompt_tokens_in_range CHECK (prompt_tokens <= 1000000000000) NOT VALID,
    ADD CONSTRAINT usage_events_completion_tokens_in_range CHECK (completion_tokens <= 1000000000000) NOT VALID,
    ADD CONSTRAINT usage_events_bytes_in_range CHECK (bytes <= 1000000000000) NOT VALID,
    ADD CONSTRAINT usage_events_messages_in_range CHECK (messages <= 1000000) NOT VALID,
    ADD CONSTRAINT usage_events_cost_in_range CHECK (cost <= 1000000000) NOT VALID;

-- Why an event (by its values) can never be counted, or NULL. Amounts above the caps are
-- still countable (sums are checked separately); a created_at outside the bounds or a NaN
-- cost is not. Keep in step with usage_events_created_at_in_range and _cost_in_range. SQL
-- and IMMUTABLE so the planner inlines it into set-based queries.
CREATE FUNCTION usage_event_problem(created_at timestamptz, cost numeric) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN NOT (created_at >= '1990-01-01 00:00:00+00'::timestamptz
                  AND created_at < '2200-01-01 00:00:00+00'::timestamptz)
            THEN 'created_at_out_of_range'
        WHEN cost = 'NaN'::numeric THEN 'cost_not_a_number'
    END
$$;

-- Events `aggregate` passed without counting, each with its reason:
--   created_at_out_of_range  created_at infinite or outside 1990..2199 (from before the bound)
--   cost_not_a_number        cost NaN (from before the bound)
--   daily_sum_overflow       adding it would take a token_usage_daily sum past 2^63-1
--   period_sum_overflow      adding it could take a usage_periods total past 2^63-1
-- The event itself stays in usage_events; rebuilds and reconciliation leave it out too.
CREATE TABLE usage_quarantine (
    event_id       bigint      NOT NULL,
    created_at     timestamptz NOT NULL,
    user_id        bigint      NOT NULL,
    recorded_xid   xid8        NOT NULL,
    reason         text        NOT NULL CONSTRAINT usage_quarantine_reason_check
                               CHECK (reason IN ('created_at_out_of_range', 'cost_not_a_number',
                                                 'daily_sum_overflow', 'period_sum_overflow')),
    -- The event's amounts as found, for whoever repairs it.
    detail         text        NOT NULL,
    quarantined_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, created_at)
);
CREATE INDEX usage_quarantine_user_idx ON usage_quarantine (user_id, created_at);

-- Like migration 1's, except that amounts past the column types are passed on clamped, so
-- the insert fails on the named bound (usage_events_*_in_range) that a plain INSERT of
-- the same event names, not on "bigint out of range" or "numeric field overflow".
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
    v_tokens bigint := LEAST(GREATEST(COALESCE(p_tokens, 0)::numeric,
                                      COALESCE(p_prompt_tokens, 0)::numeric
                                      + COALESCE(p_completion_tokens, 0)::numeric),
                             9223372036854775807);
    v_cost   numeric := p_cost;
    v_id     bigint;
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
    INSERT INTO usage_events (user_id, kind, request_type, model, tokens, prompt_tokens,
                              completion_tokens, messages, bytes, cost, metadata, created_at)
    VALUES (p_user_id, p_kind, COALESCE(p_request_type, ''), COALESCE(p_model, ''), v_tokens,
            COALESCE(p_prompt_tokens, 0), COALESCE(p_completion_tokens, 0), COALESCE(p_messages, 0),
            COALESCE(p_bytes, 0), COALESCE(v_cost, 0), COALESCE(p_metadata, '{}'), p_created_at)
    RETURNING id INTO v_id;
    RETURN v_id;
END;
$$;

-- Recovery after a dump/restore into another cluster (or any restart of transaction ids):
-- the stored watermark is then ahead of the new cluster's transaction ids, and `aggregate`
-- refuses to run. Precondition: no application has written events since the restore, so
-- every event below the old watermark was counted in the old cluster and every event at or
-- above it was not. Events below the old watermark are renumbered to 0 (counted), the rest
-- to this transaction's id, and the watermark is set to this transaction's id: the next
-- `aggregate` counts exactly the events the old cluster had not counted yet.
--
-- Refuses when it finds events that look written since the restore (their tuple's
-- inserting transaction is their recorded_xid: PostgreSQL's own default, which a restore
-- does not produce), because they would be taken for counted ones; p_force skips that check
-- for an operator who has made sure. The NOT VALID bounds above are dropped and re-added
-- around the renumbering (PostgreSQL checks them on UPDATE, and old rows may break them), so
-- usage_events is locked against readers too until commit. Returns the number of events
-- renumbered; does nothing (returns 0) when the watermark is not ahead.
CREATE FUNCTION usage_rebase_watermark(p_force boolean DEFAULT false) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_old     xid8;
    v_current xid8 := pg_current_xact_id();
    v_new     bigint;
    v_counted bigint;
    v_pending bigint;
    v_bounds  record;
    v_saved   text[] := '{}';
BEGIN
    SELECT xid INTO v_old FROM aggregation_watermark FOR UPDATE;
    IF NOT FOUND OR v_old <= v_current THEN
        RETURN 0;
    END IF;
    -- Writers wait until the renumbering commits.
    LOCK TABLE usage_events IN EXCLUSIVE MODE;
    IF NOT p_force THEN
        SELECT count(*) INTO v_new
          FROM usage_events e
         WHERE e.recorded_xid < v_current
           AND e.xmin::text = (e.recorded_xid::text::numeric % 4294967296)::text;
        IF v_new > 0 THEN
            RAISE EXCEPTION 'usage_rebase_watermark: % event(s) below transaction id % look written since the restore; renumbering would take them for counted ones', v_new, v_current
                  USING ERRCODE = 'object_not_in_prerequisite_state',
                        HINT = 'Stop the writers, delete or re-insert those events after the rebase, or call usage_rebase_watermark(p_force => true) if they are restored rows.';
        END IF;
    END IF;
    FOR v_bounds IN SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
                     WHERE conrelid = 'usage_events'::regclass AND contype = 'c' AND NOT convalidated
    LOOP
        EXECUTE format('ALTER TABLE usage_events DROP CONSTRAINT %I', v_bounds.conname);
        v_saved := v_saved || format('ALTER TABLE usage_events ADD CONSTRAINT %I %s', v_bounds.conname, v_bounds.def);
    END LOOP;
    UPDATE usage_events SET recorded_xid = '0' WHERE recorded_xid < v_old AND recorded_xid <> '0';
    GET DIAGNOSTICS v_counted = ROW_COUNT;
    UPDATE usage_events SET recorded_xid = v_current WHERE recorded_xid >= v_old;
    GET DIAGNOSTICS v_pending = ROW_COUNT;
    FOR i IN 1 .. coalesce(array_length(v_saved, 1), 0) LOOP
        EXECUTE v_saved[i];
    END LOOP;
    UPDATE usage_quarantine SET recorded_xid = '0' WHERE recorded_xid < v_old;
    UPDATE usage_quarantine SET recorded_xid = v_current WHERE recorded_xid >= v_old;
    UPDATE aggregation_watermark SET xid = v_current, updated_at = clock_timestamp();
    RAISE NOTICE 'usage_rebase_watermark: watermark % -> %; % counted event(s) renumbered to 0, % not yet counted to %',
          v_old, v_current, v_counted, v_pending, v_current;
    RETURN v_counted + v_pending;
END;
$$;
