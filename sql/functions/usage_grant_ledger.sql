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
-- again. It gathers the arrays usage_grant_allocate() (the rule itself) works on. A period whose metric has no limit (unlimited) draws nothing, and usage past the
-- limit with no active grant left is over the limit (`exceeded`), drawn from nothing.
-- The limit of an open period is the subject's plan's now; a closed period's is the one
-- recorded when it closed (usage_periods.limits).
CREATE OR REPLACE FUNCTION usage_grant_ledger(p_user_id bigint, p_org_id bigint, p_metric text, p_period text, p_kind text, p_through timestamptz, p_pending boolean)
RETURNS TABLE(grant_id bigint, period_start timestamptz, period_end timestamptz, drawn numeric)
LANGUAGE plpgsql
STABLE
AS $$
DECLARE
    g_id     bigint[];
    g_from   timestamptz[];
    g_to     timestamptz[];
    g_amount numeric[];
    v_first  timestamptz;
    v_last   timestamptz;
    v_from   timestamptz;
    v_limit  numeric;
    v_tz     text;
    v_anchor integer;
    ps       timestamptz[];
    pe       timestamptz[];
    pu       numeric[];
    pl       numeric[];
    cs       timestamptz[];
    ca       timestamptz[];
    cu       numeric[];
BEGIN
    -- The grants, earliest expiry first, and the plan's limit now: one statement.
    SELECT x.ids, x.froms, x.tos, x.amounts, x.first, x.last, l.max_value, su.timezone,
           su.billing_anchor_day
      INTO g_id, g_from, g_to, g_amount, v_first, v_last, v_limit, v_tz, v_anchor
      FROM usage_subjects su
      LEFT JOIN plan_limits l ON l.plan_id = su.plan_id AND l.period = p_period
                             AND l.kind = p_kind AND l.metric = p_metric
     CROSS JOIN LATERAL (
            SELECT array_agg(g.id ORDER BY g.expires_at, g.id) AS ids,
                   array_agg(g.starts_at ORDER BY g.expires_at, g.id) AS froms,
                   array_agg(LEAST(g.expires_at, COALESCE(g.voided_at, 'infinity')) ORDER BY g.expires_at, g.id) AS tos,
                   array_agg(g.amount ORDER BY g.expires_at, g.id) AS amounts,
                   min(g.starts_at) AS first,
                   max(LEAST(g.expires_at, COALESCE(g.voided_at, 'infinity'))) AS last
              FROM usage_grants g
             WHERE g.user_id = p_user_id AND g.org_id = p_org_id AND g.metric = p_metric
               AND g.period = p_period AND g.kind = p_kind
               AND g.starts_at < LEAST(g.expires_at, COALESCE(g.voided_at, 'infinity'))) x
     WHERE su.user_id = p_user_id AND su.org_id = p_org_id;
    IF g_id IS NULL THEN
        RETURN;
    END IF;
    -- Events not counted yet are read from the start of the period of the earliest grant on.
    IF p_pending THEN
        v_tz := usage_timezone_or_utc(v_tz);
        SELECT LEAST(v_first, (usage_period_bounds(v_tz, v_anchor, p_period, v_first)).period_start,
                     (SELECT min(up.period_start) FROM usage_periods up
                       WHERE up.user_id = p_user_id AND up.org_id = p_org_id AND up.period = p_period
                         AND up.period_end > v_first))
          INTO v_from;
    END IF;
    -- The periods the grants span, with their usage and limit.
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
    ), periods AS (
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
           AND b.period_end > v_first AND b.period_start < v_last
         GROUP BY b.period_start, b.period_end
    )
    SELECT array_agg(x.period_start ORDER BY x.period_start), array_agg(x.period_end ORDER BY x.period_start),
           array_agg(x.used ORDER BY x.period_start), array_agg(x.lim ORDER BY x.period_start)
      INTO ps, pe, pu, pl
      FROM (SELECT p.*, CASE WHEN p.limits IS NULL THEN v_limit
                             ELSE (SELECT (j ->> 'max_value')::numeric FROM jsonb_array_elements(p.limits) j
                                    WHERE j ->> 'metric' = p_metric AND j ->> 'kind' = p_kind LIMIT 1) END AS lim
              FROM periods p) x;
    -- The usage before each cut of a period past its limit (a mark, else the events).
    SELECT array_agg(c.since), array_agg(c.at),
           array_agg(usage_grant_usage_before(p_user_id, p_org_id, p_period, p_kind, p_metric,
                                              c.since, c.at, p_pending))
      INTO cs, ca, cu
      FROM (SELECT DISTINCT x.since, b.at
              FROM unnest(ps, pe, pu, pl) AS x (since, until, used, lim)
             CROSS JOIN unnest(g_from || g_to) AS b (at)
             WHERE b.at > x.since AND b.at < x.until AND x.used > x.lim) c;
    RETURN QUERY SELECT * FROM usage_grant_allocate(g_id, g_from, g_to, g_amount, ps, pe, pu, pl, cs, ca, cu);
END;
$$;
