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
CREATE OR REPLACE FUNCTION usage_subject_status(p_user_id bigint, p_org_id bigint, p_at timestamptz)
RETURNS TABLE(metric text, period text, kind text, used numeric, limit_value numeric, remaining numeric, unlimited boolean, exceeded boolean, percent numeric, period_start timestamptz, period_end timestamptz, enforcement text, granted numeric, grant_remaining numeric, projected_exhaustion timestamptz)
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
$$;
