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
-- - `limit_value` (NULL: unlimited) and `enforcement` (`soft` or `hard`; NULL when unlimited).
-- - `granted` and `grant_remaining`: the subject's grants for that metric, period kind and
--   kind active at `at`, and what they have left after every event the caller sees, later
--   ones included (usage_grant_balance; 0 and 0 without any).
-- - `remaining`: what the plan has left plus what the grants have; `exceeded`: the plan's
--   limit is reached and the grants are used up; `percent`: of the plan's limit.
-- - `projected_exhaustion`: when `used` reaches the plan's limit at the period's average
--   pace so far, seen from `at` (usage_projected_exhaustion); NULL when that is not before
--   the period ends, or without a limit or usage. Grants are not counted in it.
-- No row when the subject is not in usage_subjects. STABLE: every statement reads one
-- snapshot, so the totals and the watermark that splits counted from pending agree.
-- The day and month rows come from one statement, and the pending events from one scan over
-- both periods: a call costs a few index probes and one plan's start-up (see
-- docs/PERFORMANCE.md, "Quota answers at a million users").
CREATE OR REPLACE FUNCTION usage_subject_status(p_user_id bigint, p_org_id bigint, p_at timestamptz)
RETURNS TABLE(metric text, period text, kind text, used numeric, limit_value numeric, remaining numeric, unlimited boolean, exceeded boolean, percent numeric, period_start timestamptz, period_end timestamptz, enforcement text, granted numeric, grant_remaining numeric, projected_exhaustion timestamptz)
LANGUAGE plpgsql
STABLE
AS $$
#variable_conflict use_column
DECLARE
    d record;
    m record;
    d_known boolean;
    m_known boolean;
    b      record;
    p_tz     text;
    p_anchor integer;
    p_plan   bigint;
    grant_keys text[];
BEGIN
    -- The subject, and the limits it has grants on ('metric/period/kind'): only those read them.
    SELECT su.timezone, su.billing_anchor_day, su.plan_id,
           (SELECT array_agg(DISTINCT g.metric || '/' || g.period || '/' || g.kind)
              FROM usage_grants g WHERE g.user_id = p_user_id AND g.org_id = p_org_id)
      INTO p_tz, p_anchor, p_plan, grant_keys
      FROM usage_subjects su
     WHERE su.user_id = p_user_id AND su.org_id = p_org_id;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- Each period kind's latest period starting at or before `at`: the current one if it has
    -- not ended; else its natural bounds after that one, nothing counted yet.
    SELECT up.period_start, up.period_end, up.requests, up.messages, up.tokens, up.bytes, up.cost INTO d
      FROM usage_periods up
     WHERE up.user_id = p_user_id AND up.org_id = p_org_id AND up.period = 'day'
       AND up.period_start <= p_at
     ORDER BY up.period_start DESC
     LIMIT 1;
    d_known := FOUND AND d.period_end > p_at;
    IF NOT d_known THEN
        b := usage_period_bounds(p_tz, p_anchor, 'day', p_at);
        SELECT t.period_start, t.period_end, 0::bigint AS requests, 0::bigint AS messages, 0::bigint AS tokens, 0::bigint AS bytes, 0::numeric AS cost INTO d
          FROM usage_period_between(b.period_start, b.period_end, d.period_end, NULL) t;
    END IF;
    SELECT up.period_start, up.period_end, up.requests, up.messages, up.tokens, up.bytes, up.cost INTO m
      FROM usage_periods up
     WHERE up.user_id = p_user_id AND up.org_id = p_org_id AND up.period = 'month'
       AND up.period_start <= p_at
     ORDER BY up.period_start DESC
     LIMIT 1;
    m_known := FOUND AND m.period_end > p_at;
    IF NOT m_known THEN
        b := usage_period_bounds(p_tz, p_anchor, 'month', p_at);
        SELECT t.period_start, t.period_end, 0::bigint AS requests, 0::bigint AS messages, 0::bigint AS tokens, 0::bigint AS bytes, 0::numeric AS cost INTO m
          FROM usage_period_between(b.period_start, b.period_end, m.period_end, NULL) t;
    END IF;
    -- One statement for both period kinds: the five totals over all kinds, then one row per
    -- kind-scoped limit; each the counted total plus the pending events of its period.
    RETURN QUERY
    WITH per (period, known, p_from, p_to, requests, messages, tokens, bytes, cost) AS (
        VALUES ('day', d_known, d.period_start, d.period_end, d.requests::numeric, d.messages::numeric,
                d.tokens::numeric, d.bytes::numeric, d.cost),
               ('month', m_known, m.period_start, m.period_end, m.requests::numeric, m.messages::numeric,
                m.tokens::numeric, m.bytes::numeric, m.cost)
    ), pending AS MATERIALIZED (
        SELECT p.period, e.kind, count(*)::numeric AS requests, sum(e.messages)::numeric AS messages,
               sum(e.tokens)::numeric AS tokens, sum(e.bytes)::numeric AS bytes, sum(e.cost) AS cost
          FROM usage_subject_pending(p_user_id, p_org_id, LEAST(d.period_start, m.period_start),
                                     GREATEST(d.period_end, m.period_end)) e
          JOIN per p ON e.created_at >= p.p_from AND e.created_at < p.p_to
         GROUP BY p.period, e.kind
    ), pending_all AS (
        SELECT p.period, p.known, p.p_from, p.p_to,
               p.requests + COALESCE(sum(pe.requests), 0) AS requests,
               p.messages + COALESCE(sum(pe.messages), 0) AS messages,
               p.tokens + COALESCE(sum(pe.tokens), 0) AS tokens,
               p.bytes + COALESCE(sum(pe.bytes), 0) AS bytes,
               p.cost + COALESCE(sum(pe.cost), 0) AS cost
          FROM per p LEFT JOIN pending pe ON pe.period = p.period
         GROUP BY p.period, p.known, p.p_from, p.p_to, p.requests, p.messages, p.tokens, p.bytes, p.cost
    )
    SELECT x.metric, x.period, x.kind, x.used, x.limit_value,
           CASE WHEN x.limit_value IS NOT NULL
                THEN GREATEST(x.limit_value - x.used, 0) + COALESCE(gb.balance, 0) END,
           x.limit_value IS NULL,
           COALESCE(x.used >= x.limit_value AND COALESCE(gb.balance, 0) <= 0, false),
           CASE WHEN x.limit_value IS NULL THEN NULL
                WHEN x.limit_value = 0 THEN 100::numeric
                ELSE round(x.used * 100 / x.limit_value, 2) END,
           x.p_from, x.p_to, x.enforcement,
           COALESCE(gb.granted, 0), COALESCE(gb.balance, 0),
           usage_projected_exhaustion(x.used, x.limit_value, x.p_from, x.p_to, p_at)
      FROM (SELECT pa.period, pa.p_from, pa.p_to, mt.metric, ''::text AS kind, mt.used,
                   l.max_value AS limit_value, l.enforcement
              FROM pending_all pa
             CROSS JOIN LATERAL (VALUES ('bytes', pa.bytes), ('cost', pa.cost),
                                        ('messages', pa.messages), ('requests', pa.requests),
                                        ('tokens', pa.tokens)) AS mt (metric, used)
              LEFT JOIN plan_limits l
                ON l.plan_id = p_plan AND l.period = pa.period AND l.kind = '' AND l.metric = mt.metric
            UNION ALL
            SELECT p.period, p.p_from, p.p_to, l.metric, l.kind,
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
              FROM per p
              JOIN plan_limits l ON l.plan_id = p_plan AND l.period = p.period AND l.kind <> ''
              LEFT JOIN usage_period_kind_totals k
                ON p.known AND k.user_id = p_user_id AND k.org_id = p_org_id AND k.period = p.period
               AND k.period_start = p.p_from AND k.kind = l.kind
              LEFT JOIN pending pk ON pk.period = p.period AND pk.kind = l.kind) AS x
      -- Only for a limit the subject has grants on: the others pay one index probe per call.
      LEFT JOIN LATERAL (SELECT b.granted, b.balance
                           FROM usage_grant_balance(p_user_id, p_org_id, x.metric, x.period, x.kind, p_at) b
                          WHERE x.metric || '/' || x.period || '/' || x.kind = ANY (grant_keys)) gb ON true
     ORDER BY x.period, x.metric, x.kind;
END;
$$;
