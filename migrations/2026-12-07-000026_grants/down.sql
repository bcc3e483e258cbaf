-- ==== Written by scripts/sql-migration: the definitions as they were before ====
SET LOCAL check_function_bodies = off;

DROP FUNCTION org_quota_status(bigint,timestamp with time zone);

CREATE OR REPLACE FUNCTION org_quota_status(p_org_id bigint, p_at timestamp with time zone DEFAULT now())
 RETURNS TABLE(metric text, period text, kind text, used numeric, limit_value numeric, remaining numeric, unlimited boolean, exceeded boolean, percent numeric, period_start timestamp with time zone, period_end timestamp with time zone, enforcement text)
 LANGUAGE sql
 STABLE
 SET search_path FROM CURRENT
AS $function$
    -- Organization ids are positive: (0, 0) would be user 0's personal usage.
    SELECT * FROM usage_subject_status(0, p_org_id, p_at) WHERE p_org_id > 0
$function$;

DROP FUNCTION quota_status(bigint,timestamp with time zone);

CREATE OR REPLACE FUNCTION quota_status(p_user_id bigint, p_at timestamp with time zone DEFAULT now())
 RETURNS TABLE(metric text, period text, kind text, used numeric, limit_value numeric, remaining numeric, unlimited boolean, exceeded boolean, percent numeric, period_start timestamp with time zone, period_end timestamp with time zone, enforcement text)
 LANGUAGE sql
 STABLE
 SET search_path FROM CURRENT
AS $function$
    SELECT * FROM usage_subject_status(p_user_id, 0, p_at)
$function$;

CREATE OR REPLACE FUNCTION usage_check_event(p_user_id bigint, p_kind text, p_tokens bigint, p_prompt_tokens bigint, p_completion_tokens bigint, p_messages integer, p_bytes bigint, p_cost numeric, p_request_type text, p_model text, p_metadata jsonb, p_created_at timestamp with time zone, p_org_id bigint)
 RETURNS TABLE(fits boolean, metric text, period text, kind text, enforcement text, limit_value numeric, used numeric, remaining numeric, resets_at timestamp with time zone)
 LANGUAGE plpgsql
 STABLE
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION usage_enforce_hard_limits(p_user_id bigint, p_org_id bigint, p_kind text, p_at timestamp with time zone, p_messages numeric, p_tokens numeric, p_bytes numeric, p_cost numeric)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
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
$function$;

DROP FUNCTION usage_limit_checks(bigint,bigint,text,timestamp with time zone,numeric,numeric,numeric,numeric);

CREATE OR REPLACE FUNCTION usage_limit_checks(p_user_id bigint, p_org_id bigint, p_kind text, p_at timestamp with time zone, p_messages numeric, p_tokens numeric, p_bytes numeric, p_cost numeric)
 RETURNS TABLE(metric text, period text, kind text, enforcement text, limit_value numeric, used numeric, amount numeric, fits boolean, period_end timestamp with time zone)
 LANGUAGE sql
 STABLE
AS $function$
    SELECT s.metric, s.period, s.kind, s.enforcement, s.limit_value, s.used, a.amount,
           s.used + a.amount <= s.limit_value, s.period_end
      FROM usage_subject_status(p_user_id, p_org_id, p_at) s
      JOIN (VALUES ('requests', 1::numeric), ('messages', p_messages), ('tokens', p_tokens),
                   ('bytes', p_bytes), ('cost', p_cost)) AS a (metric, amount)
        ON a.metric = s.metric
     WHERE NOT s.unlimited AND (s.kind = '' OR s.kind = p_kind) AND a.amount > 0
$function$;

DROP FUNCTION usage_subject_status(bigint,bigint,timestamp with time zone);

CREATE OR REPLACE FUNCTION usage_subject_status(p_user_id bigint, p_org_id bigint, p_at timestamp with time zone)
 RETURNS TABLE(metric text, period text, kind text, used numeric, limit_value numeric, remaining numeric, unlimited boolean, exceeded boolean, percent numeric, period_start timestamp with time zone, period_end timestamp with time zone, enforcement text)
 LANGUAGE plpgsql
 STABLE
AS $function$
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
$function$;

DROP FUNCTION usage_grant(bigint,bigint,text,numeric,text,timestamp with time zone,timestamp with time zone,text,text);

DROP FUNCTION usage_grant_allocate(bigint[],timestamp with time zone[],timestamp with time zone[],numeric[],timestamp with time zone[],timestamp with time zone[],numeric[],numeric[],timestamp with time zone[],timestamp with time zone[],numeric[]);

DROP FUNCTION usage_grant_balance(bigint,bigint,text,text,text,timestamp with time zone);

DROP FUNCTION usage_grant_ledger(bigint,bigint,text,text,text,timestamp with time zone,boolean);

DROP FUNCTION usage_grant_settle();

DROP FUNCTION usage_grant_usage_before(bigint,bigint,text,text,text,timestamp with time zone,timestamp with time zone,boolean);

DROP FUNCTION usage_void_grant(bigint,text);
-- ==== End of the written part ====

DELETE FROM webhook_deliveries d USING quota_alerts a WHERE d.alert_id = a.id AND a.alert <> 'quota';
DELETE FROM quota_alerts WHERE alert <> 'quota';
ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_event_type_check;
ALTER TABLE webhook_deliveries ADD CONSTRAINT webhook_deliveries_event_type_check
    CHECK (event_type IN ('quota.threshold', 'quota.exhausted'));
ALTER TABLE quota_alerts DROP CONSTRAINT quota_alerts_once;
ALTER TABLE quota_alerts
    ADD CONSTRAINT quota_alerts_once UNIQUE (user_id, org_id, metric, period, kind, period_start, threshold);
ALTER TABLE quota_alerts DROP COLUMN grant_id, DROP COLUMN alert;
DROP TABLE usage_grant_marks;
DROP TABLE usage_grant_draws;
DROP TABLE usage_grants;
