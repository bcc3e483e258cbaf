-- ==== Written by scripts/sql-migration: the definitions as they were before ====
SET LOCAL check_function_bodies = off;

CREATE OR REPLACE FUNCTION usage_subject_pending(p_user_id bigint, p_org_id bigint, p_from timestamp with time zone, p_to timestamp with time zone)
 RETURNS SETOF usage_events
 LANGUAGE sql
 STABLE
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION usage_subject_status(p_user_id bigint, p_org_id bigint, p_at timestamp with time zone)
 RETURNS TABLE(metric text, period text, kind text, used numeric, limit_value numeric, remaining numeric, unlimited boolean, exceeded boolean, percent numeric, period_start timestamp with time zone, period_end timestamp with time zone, enforcement text, granted numeric, grant_remaining numeric, projected_exhaustion timestamp with time zone)
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
    grant_keys text[];
BEGIN
    SELECT su.timezone, su.billing_anchor_day, su.plan_id INTO p_tz, p_anchor, p_plan
      FROM usage_subjects su
     WHERE su.user_id = p_user_id AND su.org_id = p_org_id;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- The limits the subject has grants on ('metric/period/kind'): only those read them.
    SELECT array_agg(DISTINCT g.metric || '/' || g.period || '/' || g.kind) INTO grant_keys
      FROM usage_grants g WHERE g.user_id = p_user_id AND g.org_id = p_org_id;
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
               CASE WHEN x.limit_value IS NOT NULL
                    THEN GREATEST(x.limit_value - x.used, 0) + COALESCE(gb.balance, 0) END,
               x.limit_value IS NULL,
               COALESCE(x.used >= x.limit_value AND COALESCE(gb.balance, 0) <= 0, false),
               CASE WHEN x.limit_value IS NULL THEN NULL
                    WHEN x.limit_value = 0 THEN 100::numeric
                    ELSE round(x.used * 100 / x.limit_value, 2) END,
               p_from, p_to, x.enforcement,
               COALESCE(gb.granted, 0), COALESCE(gb.balance, 0),
               usage_projected_exhaustion(x.used, x.limit_value, p_from, p_to, p_at)
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
          -- Only for a limit the subject has grants on: the others pay one index probe per call.
          LEFT JOIN LATERAL (SELECT b.granted, b.balance
                               FROM usage_grant_balance(p_user_id, p_org_id, x.metric, per, x.kind, p_at) b
                              WHERE x.metric || '/' || per || '/' || x.kind = ANY (grant_keys)) gb ON true
         ORDER BY x.metric, x.kind;
    END LOOP;
END;
$function$;
-- ==== End of the written part ====

CREATE INDEX usage_events_user_xid_idx ON usage_events (user_id, recorded_xid)
    WHERE org_id IS NULL;
CREATE INDEX usage_events_org_xid_idx ON usage_events (org_id, recorded_xid)
    WHERE org_id IS NOT NULL;
DROP INDEX usage_events_subject_xid_idx;
