-- Back to personal usage only. The organizations' books (their summary rows, periods and
-- alerts) and idempotency keys are deleted; their events stay as the members' own, and
-- `usage-worker --run aggregate --from D1 --to D2` recounts the members' days from them.
DO $$
DECLARE
    v_table text;
BEGIN
    FOREACH v_table IN ARRAY ARRAY['usage_events', 'token_usage_daily', 'usage_periods',
                                   'usage_period_kind_totals', 'quota_alerts', 'organizations',
                                   'organization_members'] LOOP
        EXECUTE format('DROP POLICY usage_not_reader ON %I', v_table);
        EXECUTE format('DROP POLICY usage_reader_own_org ON %I', v_table);
        EXECUTE format('ALTER TABLE %I DISABLE ROW LEVEL SECURITY', v_table);
    END LOOP;
END $$;
DROP FUNCTION usage_is_reader();
DROP FUNCTION usage_current_org();
DROP FUNCTION org_usage_by_member(bigint, date, date);
DROP FUNCTION org_usage_summary(bigint, text, date, date);
DROP FUNCTION org_quota_status(bigint, timestamptz);

CREATE OR REPLACE FUNCTION usage_summary(p_user_id bigint, p_granularity text, p_from date, p_to date)
RETURNS TABLE (period_start date, events bigint, tokens bigint, prompt_tokens bigint,
               completion_tokens bigint, messages bigint, bytes bigint, cost numeric)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_granularity IS NULL OR p_granularity NOT IN ('day', 'week', 'month', 'year') THEN
        RAISE EXCEPTION 'unknown granularity "%"; expected day, week, month or year', p_granularity
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    SELECT date_trunc(p_granularity, d.day::timestamp)::date,
           sum(d.events)::bigint, sum(d.tokens)::bigint, sum(d.prompt_tokens)::bigint,
           sum(d.completion_tokens)::bigint, sum(d.messages)::bigint, sum(d.bytes)::bigint,
           sum(d.cost)
      FROM token_usage_daily d
     WHERE d.user_id = p_user_id
       AND d.day BETWEEN p_from AND p_to
     GROUP BY 1
     ORDER BY 1;
END;
$$;
DROP FUNCTION usage_summary_check_granularity(text);

-- quota_status() as in 2026-11-29-000010_fast_status, reading users' periods only.
CREATE TEMP TABLE quota_status_settings ON COMMIT DROP AS
SELECT unnest(proconfig) AS setting FROM pg_proc
 WHERE oid = 'quota_status(bigint, timestamptz)'::regprocedure;

CREATE OR REPLACE FUNCTION quota_status(p_user_id bigint, p_at timestamptz DEFAULT now())
RETURNS TABLE (metric text, period text, kind text, used numeric, limit_value numeric,
               remaining numeric, unlimited boolean, exceeded boolean, percent numeric,
               period_start timestamptz, period_end timestamptz)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
    u_tz       text;
    u_anchor   int;
    u_plan     bigint;
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
BEGIN
    SELECT usr.timezone, usr.billing_anchor_day, usr.plan_id INTO u_tz, u_anchor, u_plan
      FROM users usr WHERE usr.id = p_user_id;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    FOREACH per IN ARRAY ARRAY['day', 'month'] LOOP
        -- The latest period starting at or before `at`: the current one if it has not ended.
        SELECT up.period_start, up.period_end, up.requests, up.messages, up.tokens, up.bytes, up.cost
          INTO c_start, c_end, c_requests, c_messages, c_tokens, c_bytes, c_cost
          FROM usage_periods up
         WHERE up.user_id = p_user_id AND up.period = per AND up.period_start <= p_at
         ORDER BY up.period_start DESC
         LIMIT 1;
        known := FOUND AND c_end > p_at;
        IF known THEN
            p_from := c_start;
            p_to := c_end;
        ELSE
            -- No events yet in this period: its natural bounds, after any earlier period.
            b := usage_period_bounds(u_tz, u_anchor, per, p_at);
            p_from := GREATEST(b.period_start, c_end);
            p_to := b.period_end;
        END IF;
        -- The five totals over all kinds, then one row per kind-scoped limit: UNION ALL and one
        -- small sort, no de-duplication.
        RETURN QUERY
        SELECT x.metric, per, x.kind, x.used, x.limit_value,
               CASE WHEN x.limit_value IS NOT NULL THEN GREATEST(x.limit_value - x.used, 0) END,
               x.limit_value IS NULL,
               COALESCE(x.used >= x.limit_value, false),
               CASE WHEN x.limit_value IS NULL THEN NULL
                    WHEN x.limit_value = 0 THEN 100::numeric
                    ELSE round(x.used * 100 / x.limit_value, 2) END,
               p_from, p_to
          FROM (SELECT m.metric, ''::text AS kind,
                       CASE WHEN NOT known THEN 0::numeric ELSE m.used END AS used,
                       l.max_value AS limit_value
                  FROM (VALUES ('bytes', c_bytes::numeric), ('cost', c_cost),
                               ('messages', c_messages::numeric), ('requests', c_requests::numeric),
                               ('tokens', c_tokens::numeric)) AS m (metric, used)
                  LEFT JOIN plan_limits l
                    ON l.plan_id = u_plan AND l.period = per AND l.kind = '' AND l.metric = m.metric
                UNION ALL
                SELECT l.metric, l.kind,
                       COALESCE(CASE l.metric WHEN 'requests' THEN k.requests::numeric
                                              WHEN 'messages' THEN k.messages::numeric
                                              WHEN 'tokens' THEN k.tokens::numeric
                                              WHEN 'bytes' THEN k.bytes::numeric
                                              ELSE k.cost END, 0),
                       l.max_value
                  FROM plan_limits l
                  LEFT JOIN usage_period_kind_totals k
                    ON known AND k.user_id = p_user_id AND k.period = per
                   AND k.period_start = p_from AND k.kind = l.kind
                 WHERE l.plan_id = u_plan AND l.period = per AND l.kind <> '') AS x
         ORDER BY x.metric, x.kind;
    END LOOP;
END;
$$;

DO $$
DECLARE
    s text;
BEGIN
    FOR s IN SELECT setting FROM quota_status_settings LOOP
        EXECUTE format('ALTER FUNCTION quota_status(bigint, timestamptz) SET %I = %s',
                       split_part(s, '=', 1), substr(s, strpos(s, '=') + 1));
    END LOOP;
END;
$$;
DROP TABLE quota_status_settings;
DROP FUNCTION usage_subject_status(bigint, bigint, text, int, bigint, timestamptz);

DROP FUNCTION usage_record(bigint, text, bigint, bigint, bigint, integer, bigint, numeric, text,
                           text, jsonb, timestamptz, bigint, text);
CREATE FUNCTION usage_record(
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
DO $$
DECLARE
    v_fn regprocedure;
BEGIN
    FOREACH v_fn IN ARRAY ARRAY[
        'usage_record(bigint, text, bigint, bigint, bigint, integer, bigint, numeric, text, text, jsonb, timestamptz)',
        'usage_summary(bigint, text, date, date)'
    ]::regprocedure[] LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = %I, pg_temp', v_fn, current_schema());
    END LOOP;
END $$;

DROP TABLE usage_idempotency_keys;
DROP TABLE usage_settings;

DELETE FROM quota_alerts WHERE org_id <> 0;
ALTER TABLE quota_alerts DROP CONSTRAINT quota_alerts_once;
ALTER TABLE quota_alerts DROP COLUMN org_id;
ALTER TABLE quota_alerts
    ADD CONSTRAINT quota_alerts_once UNIQUE (user_id, metric, period, kind, period_start, threshold);

DELETE FROM usage_periods WHERE org_id <> 0;
ALTER TABLE usage_period_kind_totals DROP CONSTRAINT usage_period_kind_totals_period_fkey;
ALTER TABLE usage_period_kind_totals DROP CONSTRAINT usage_period_kind_totals_pkey;
ALTER TABLE usage_periods DROP CONSTRAINT usage_periods_pkey;
ALTER TABLE usage_periods DROP COLUMN org_id;
ALTER TABLE usage_periods ADD PRIMARY KEY (user_id, period, period_start);
ALTER TABLE usage_period_kind_totals DROP COLUMN org_id;
ALTER TABLE usage_period_kind_totals
    ADD PRIMARY KEY (user_id, period, period_start, kind),
    ADD CONSTRAINT usage_period_kind_totals_user_id_period_period_start_fkey
        FOREIGN KEY (user_id, period, period_start)
        REFERENCES usage_periods (user_id, period, period_start) ON DELETE CASCADE;

DELETE FROM token_usage_daily WHERE org_id IS NOT NULL;
ALTER TABLE token_usage_daily DROP CONSTRAINT token_usage_daily_pkey;
ALTER TABLE token_usage_daily DROP COLUMN org_key, DROP COLUMN org_id;
ALTER TABLE token_usage_daily ADD PRIMARY KEY (user_id, day, kind, request_type, model);

ALTER TABLE usage_quarantine DROP COLUMN org_id;
ALTER TABLE usage_events DROP COLUMN org_id;
DROP TABLE organization_members;
DROP TABLE organizations;
