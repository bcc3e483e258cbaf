-- usage_grant_ledger(user_id, org_id, metric, period, kind, through, pending): what each grant
-- of one subject, metric, period kind and event kind ('' = all kinds) gave, per period, in
-- the periods that start at or before `through`. THE drawdown: the aggregate job records it
-- (usage_grant_draws, counted events only) and the answers compute it live (`pending`: with
-- the events not counted yet).
-- In each period, usage up to the plan's limit is the plan's; every unit past it is drawn,
-- at the instant it was used, from the grants active then (starts_at <= instant < expires_at,
-- and before voided_at), earliest expiry first (then the lower id), each at most its amount
-- over its whole life: what a grant has not given carries into later periods until it
-- expires. The period is cut at every grant's start, expiry and void inside it; the usage
-- before each cut comes from usage_grant_usage_before, so that the whole period is not read
-- again. A period whose metric has no limit (unlimited) draws nothing, and usage past the
-- limit with no active grant left is over the limit (`exceeded`), drawn from nothing.
-- The limit of an open period is the subject's plan's now; a closed period's is the one
-- recorded when it closed (usage_periods.limits).
CREATE OR REPLACE FUNCTION usage_grant_ledger(p_user_id bigint, p_org_id bigint, p_metric text, p_period text, p_kind text, p_through timestamptz, p_pending boolean)
RETURNS TABLE(grant_id bigint, period_start timestamptz, period_end timestamptz, drawn numeric)
LANGUAGE plpgsql
STABLE
AS $$
DECLARE
    g_id    bigint[];
    g_from  timestamptz[];
    g_to    timestamptz[];
    g_left  numeric[];
    g_here  numeric[];
    v_first timestamptz;
    v_last  timestamptz;
    v_from  timestamptz;
    v_limit numeric;
    v_tz    text;
    v_anchor integer;
    v_lim   numeric;
    p       record;
    pts     timestamptz[];
    cum     numeric[];
    n       integer;
    i       integer;
    k       integer;
    v_over  numeric;
    v_take  numeric;
BEGIN
    SELECT array_agg(g.id ORDER BY g.expires_at, g.id),
           array_agg(g.starts_at ORDER BY g.expires_at, g.id),
           array_agg(LEAST(g.expires_at, COALESCE(g.voided_at, 'infinity')) ORDER BY g.expires_at, g.id),
           array_agg(g.amount ORDER BY g.expires_at, g.id),
           min(g.starts_at), max(LEAST(g.expires_at, COALESCE(g.voided_at, 'infinity')))
      INTO g_id, g_from, g_to, g_left, v_first, v_last
      FROM usage_grants g
     WHERE g.user_id = p_user_id AND g.org_id = p_org_id AND g.metric = p_metric
       AND g.period = p_period AND g.kind = p_kind
       AND g.starts_at < LEAST(g.expires_at, COALESCE(g.voided_at, 'infinity'));
    IF g_id IS NULL THEN
        RETURN;
    END IF;
    n := array_length(g_id, 1);
    g_here := array_fill(0::numeric, ARRAY[n]);
    SELECT l.max_value, usage_timezone_or_utc(su.timezone), su.billing_anchor_day
      INTO v_limit, v_tz, v_anchor
      FROM usage_subjects su
      LEFT JOIN plan_limits l ON l.plan_id = su.plan_id AND l.period = p_period
                             AND l.kind = p_kind AND l.metric = p_metric
     WHERE su.user_id = p_user_id AND su.org_id = p_org_id;
    -- Events not counted yet are read from the start of the period of the earliest grant on.
    IF p_pending THEN
        SELECT LEAST(v_first, (usage_period_bounds(v_tz, v_anchor, p_period, v_first)).period_start,
                     (SELECT min(up.period_start) FROM usage_periods up
                       WHERE up.user_id = p_user_id AND up.org_id = p_org_id AND up.period = p_period
                         AND up.period_end > v_first))
          INTO v_from;
    END IF;
    FOR p IN
        WITH counted AS (
            SELECT up.period_start, up.period_end, up.limits,
                   CASE WHEN p_kind = '' THEN
                            CASE p_metric WHEN 'requests' THEN up.requests::numeric WHEN 'messages' THEN up.messages::numeric
                                          WHEN 'tokens' THEN up.tokens::numeric WHEN 'bytes' THEN up.bytes::numeric
                                          ELSE up.cost END
                        ELSE COALESCE(CASE p_metric WHEN 'requests' THEN k.requests::numeric WHEN 'messages' THEN k.messages::numeric
                                                    WHEN 'tokens' THEN k.tokens::numeric WHEN 'bytes' THEN k.bytes::numeric
                                                    ELSE k.cost END, 0) END AS used
              FROM usage_periods up
              LEFT JOIN usage_period_kind_totals k
                ON p_kind <> '' AND k.user_id = up.user_id AND k.org_id = up.org_id
               AND k.period = up.period AND k.period_start = up.period_start AND k.kind = p_kind
             WHERE up.user_id = p_user_id AND up.org_id = p_org_id AND up.period = p_period
               AND up.period_end > v_first AND up.period_start < v_last
               AND up.period_start <= p_through
        ), pending AS MATERIALIZED (
            SELECT e.created_at,
                   CASE p_metric WHEN 'requests' THEN 1::numeric WHEN 'messages' THEN e.messages::numeric
                                 WHEN 'tokens' THEN e.tokens::numeric WHEN 'bytes' THEN e.bytes::numeric
                                 ELSE e.cost END AS amount
              FROM usage_subject_pending(p_user_id, p_org_id, v_from, 'infinity') e
             WHERE p_pending AND (p_kind = '' OR e.kind = p_kind)
        )
        SELECT c.period_start, c.period_end, c.limits,
               c.used + COALESCE((SELECT sum(e.amount) FROM pending e
                                   WHERE e.created_at >= c.period_start AND e.created_at < c.period_end), 0) AS used
          FROM counted c
        UNION ALL
        -- Events not counted yet in a period not opened yet: its natural bounds.
        SELECT b.period_start, b.period_end, NULL::jsonb, sum(e.amount)
          FROM pending e
         CROSS JOIN LATERAL usage_period_bounds(v_tz, v_anchor, p_period, e.created_at) b
         WHERE NOT EXISTS (SELECT 1 FROM counted c WHERE e.created_at >= c.period_start AND e.created_at < c.period_end)
           AND b.period_start <= p_through
         GROUP BY b.period_start, b.period_end
         ORDER BY 1
    LOOP
        v_lim := CASE WHEN p.limits IS NULL THEN v_limit
                      ELSE (SELECT (x ->> 'max_value')::numeric FROM jsonb_array_elements(p.limits) x
                             WHERE x ->> 'metric' = p_metric AND x ->> 'kind' = p_kind LIMIT 1) END;
        CONTINUE WHEN v_lim IS NULL OR p.used <= v_lim;
        -- The period's cuts (none, most often: grants that span it), and the usage before each.
        pts := ARRAY[]::timestamptz[];
        FOR i IN 1 .. n LOOP
            IF (g_from[i] > p.period_start AND g_from[i] < p.period_end)
               OR (g_to[i] > p.period_start AND g_to[i] < p.period_end) THEN
                SELECT array_agg(DISTINCT x ORDER BY x) INTO pts
                  FROM unnest(g_from || g_to) x
                 WHERE x > p.period_start AND x < p.period_end;
                EXIT;
            END IF;
        END LOOP;
        pts := ARRAY[p.period_start] || pts || ARRAY[p.period_end];
        cum := ARRAY[0::numeric];
        FOR k IN 2 .. array_length(pts, 1) - 1 LOOP
            cum := cum || LEAST(GREATEST(usage_grant_usage_before(p_user_id, p_org_id, p_period, p_kind, p_metric,
                                                                   p.period_start, pts[k], p_pending),
                                         cum[k - 1]), p.used);
        END LOOP;
        cum := cum || p.used;
        FOR k IN 1 .. array_length(pts, 1) - 1 LOOP
            v_over := GREATEST(cum[k + 1] - v_lim, 0) - GREATEST(cum[k] - v_lim, 0);
            CONTINUE WHEN v_over <= 0;
            FOR i IN 1 .. n LOOP
                EXIT WHEN v_over <= 0;
                IF g_from[i] <= pts[k] AND g_to[i] > pts[k] AND g_left[i] > 0 THEN
                    v_take := LEAST(v_over, g_left[i]);
                    g_left[i] := g_left[i] - v_take;
                    g_here[i] := g_here[i] + v_take;
                    v_over := v_over - v_take;
                END IF;
            END LOOP;
        END LOOP;
        FOR i IN 1 .. n LOOP
            IF g_here[i] > 0 THEN
                grant_id := g_id[i];
                period_start := p.period_start;
                period_end := p.period_end;
                drawn := g_here[i];
                RETURN NEXT;
                g_here[i] := 0;
            END IF;
        END LOOP;
    END LOOP;
END;
$$;
