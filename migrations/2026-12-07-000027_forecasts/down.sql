-- ==== Written by scripts/sql-migration: the definitions as they were before ====
SET LOCAL check_function_bodies = off;

DROP FUNCTION org_quota_status(bigint,timestamp with time zone);

CREATE OR REPLACE FUNCTION org_quota_status(p_org_id bigint, p_at timestamp with time zone DEFAULT now())
 RETURNS TABLE(metric text, period text, kind text, used numeric, limit_value numeric, remaining numeric, unlimited boolean, exceeded boolean, percent numeric, period_start timestamp with time zone, period_end timestamp with time zone, enforcement text, granted numeric, grant_remaining numeric)
 LANGUAGE sql
 STABLE
 SET search_path FROM CURRENT
AS $function$
    -- Organization ids are positive: (0, 0) would be user 0's personal usage.
    SELECT * FROM usage_subject_status(0, p_org_id, p_at) WHERE p_org_id > 0
$function$;

DROP FUNCTION quota_status(bigint,timestamp with time zone);

CREATE OR REPLACE FUNCTION quota_status(p_user_id bigint, p_at timestamp with time zone DEFAULT now())
 RETURNS TABLE(metric text, period text, kind text, used numeric, limit_value numeric, remaining numeric, unlimited boolean, exceeded boolean, percent numeric, period_start timestamp with time zone, period_end timestamp with time zone, enforcement text, granted numeric, grant_remaining numeric)
 LANGUAGE sql
 STABLE
 SET search_path FROM CURRENT
AS $function$
    SELECT * FROM usage_subject_status(p_user_id, 0, p_at)
$function$;

DROP FUNCTION usage_subject_status(bigint,bigint,timestamp with time zone);

CREATE OR REPLACE FUNCTION usage_subject_status(p_user_id bigint, p_org_id bigint, p_at timestamp with time zone)
 RETURNS TABLE(metric text, period text, kind text, used numeric, limit_value numeric, remaining numeric, unlimited boolean, exceeded boolean, percent numeric, period_start timestamp with time zone, period_end timestamp with time zone, enforcement text, granted numeric, grant_remaining numeric)
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
               COALESCE(gb.granted, 0), COALESCE(gb.balance, 0)
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

DROP FUNCTION usage_hmac_sha256(bytea,bytea);

DROP FUNCTION usage_projected_exhaustion(numeric,numeric,timestamp with time zone,timestamp with time zone,timestamp with time zone);

DROP FUNCTION usage_set_alert_emails(bigint,text);

DROP FUNCTION usage_unsubscribe(text);

DROP VIEW usage_subjects;

CREATE OR REPLACE VIEW usage_subjects WITH (security_invoker=true) AS
 SELECT u.id AS user_id,
    0::bigint AS org_id,
    u.name,
    u.email,
    u.timezone,
    u.billing_anchor_day,
    u.plan_id,
    u.alerts_enabled
   FROM users u
UNION ALL
 SELECT 0::bigint AS user_id,
    o.id AS org_id,
    o.name,
    NULL::text AS email,
    o.timezone,
    o.billing_anchor_day,
    o.plan_id,
    o.alerts_enabled
   FROM organizations o;
-- ==== End of the written part ====

DELETE FROM webhook_deliveries d USING quota_alerts a
 WHERE d.alert_id = a.id AND a.alert = 'quota.forecast';
DELETE FROM quota_alerts WHERE alert = 'quota.forecast';
UPDATE quota_alerts SET status = 'suppressed' WHERE status = 'unsubscribed';
ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_event_type_check;
ALTER TABLE webhook_deliveries ADD CONSTRAINT webhook_deliveries_event_type_check
    CHECK (event_type IN ('quota.threshold', 'quota.exhausted',
                          'credit.low', 'credit.depleted', 'credit.recovered'));
ALTER TABLE quota_alerts DROP CONSTRAINT quota_alerts_status_check;
ALTER TABLE quota_alerts ADD CONSTRAINT quota_alerts_status_check
    CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'suppressed', 'superseded', 'expired'));
ALTER TABLE quota_alerts DROP CONSTRAINT quota_alerts_alert_check;
ALTER TABLE quota_alerts ADD CONSTRAINT quota_alerts_alert_check
    CHECK (alert IN ('quota', 'credit.low', 'credit.depleted', 'credit.recovered'));
ALTER TABLE quota_alerts DROP COLUMN projected_exhaustion;
DROP TABLE usage_unsubscribe_keys;
ALTER TABLE users DROP COLUMN alert_emails;
