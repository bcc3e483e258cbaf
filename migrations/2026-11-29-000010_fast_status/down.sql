-- Back to the quota_status() of 2026-11-23-000003_quota_periods, keeping settings pinned on
-- the function (CREATE OR REPLACE would reset them).
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
    u      record;
    cur    record;
    b      record;
    per    text;
    p_from timestamptz;
    p_to   timestamptz;
    known  boolean;
BEGIN
    SELECT usr.timezone, usr.billing_anchor_day, usr.plan_id INTO u FROM users usr WHERE usr.id = p_user_id;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    FOREACH per IN ARRAY ARRAY['day', 'month'] LOOP
        -- The latest period starting at or before `at`: the current one if it has not ended.
        SELECT up.period_start, up.period_end, up.requests, up.messages, up.tokens, up.bytes, up.cost
          INTO cur
          FROM usage_periods up
         WHERE up.user_id = p_user_id AND up.period = per AND up.period_start <= p_at
         ORDER BY up.period_start DESC
         LIMIT 1;
        known := FOUND AND cur.period_end > p_at;
        IF known THEN
            p_from := cur.period_start;
            p_to := cur.period_end;
        ELSE
            -- No events yet in this period: its natural bounds, after any earlier period.
            b := usage_period_bounds(u.timezone, u.billing_anchor_day, per, p_at);
            p_from := GREATEST(b.period_start, cur.period_end);
            p_to := b.period_end;
        END IF;
        RETURN QUERY
        WITH wanted AS (
            SELECT m.metric, ''::text AS kind
              FROM unnest(ARRAY['bytes', 'cost', 'messages', 'requests', 'tokens']) AS m (metric)
            UNION
            SELECT l.metric, l.kind FROM plan_limits l WHERE l.plan_id = u.plan_id AND l.period = per
        ), measured AS (
            SELECT w.metric, w.kind,
                   CASE WHEN NOT known THEN 0
                        WHEN w.kind = '' THEN
                            CASE w.metric WHEN 'requests' THEN cur.requests::numeric
                                          WHEN 'messages' THEN cur.messages::numeric
                                          WHEN 'tokens' THEN cur.tokens::numeric
                                          WHEN 'bytes' THEN cur.bytes::numeric
                                          ELSE cur.cost END
                        ELSE COALESCE(
                            CASE w.metric WHEN 'requests' THEN k.requests::numeric
                                          WHEN 'messages' THEN k.messages::numeric
                                          WHEN 'tokens' THEN k.tokens::numeric
                                          WHEN 'bytes' THEN k.bytes::numeric
                                          ELSE k.cost END, 0)
                   END AS used,
                   l.max_value AS limit_value
              FROM wanted w
              LEFT JOIN usage_period_kind_totals k
                ON known AND w.kind <> '' AND k.user_id = p_user_id AND k.period = per
               AND k.period_start = p_from AND k.kind = w.kind
              LEFT JOIN plan_limits l
                ON l.plan_id = u.plan_id AND l.metric = w.metric AND l.period = per AND l.kind = w.kind
        )
        SELECT x.metric, per, x.kind, x.used, x.limit_value,
               CASE WHEN x.limit_value IS NOT NULL THEN GREATEST(x.limit_value - x.used, 0) END,
               x.limit_value IS NULL,
               COALESCE(x.used >= x.limit_value, false),
               CASE WHEN x.limit_value IS NULL THEN NULL
                    WHEN x.limit_value = 0 THEN 100::numeric
                    ELSE round(x.used * 100 / x.limit_value, 2) END,
               p_from, p_to
          FROM measured x
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
