-- Reconciliation, step 3: where the recorded totals (usage_closing_recorded: of the period,
-- kind = '', and per event kind) differ from the raw events (usage_closing_raw). Each row is
-- one subject (user_id, org_id), period, kind and metric.
WITH actual AS (
    SELECT user_id, org_id, period_start, kind, requests, messages, tokens, bytes, cost
      FROM usage_closing_raw
    UNION ALL
    SELECT user_id, org_id, period_start, '', sum(requests), sum(messages), sum(tokens),
           sum(bytes), sum(cost)
      FROM usage_closing_raw
     GROUP BY user_id, org_id, period_start
), differing AS (
    -- Only rows that differ somewhere are spread out into one row per metric.
    SELECT COALESCE(r.user_id, a.user_id) AS user_id,
           COALESCE(r.org_id, a.org_id) AS org_id,
           COALESCE(r.period_start, a.period_start) AS period_start,
           COALESCE(r.kind, a.kind) AS kind,
           r.requests AS r_requests, r.messages AS r_messages, r.tokens AS r_tokens,
           r.bytes AS r_bytes, r.cost AS r_cost,
           a.requests AS a_requests, a.messages AS a_messages, a.tokens AS a_tokens,
           a.bytes AS a_bytes, a.cost AS a_cost
      FROM usage_closing_recorded r
      FULL JOIN actual a ON a.user_id = r.user_id AND a.org_id = r.org_id
                        AND a.period_start = r.period_start AND a.kind = r.kind
     WHERE (COALESCE(r.requests, 0), COALESCE(r.messages, 0), COALESCE(r.tokens, 0),
            COALESCE(r.bytes, 0), COALESCE(r.cost, 0))
           <> (COALESCE(a.requests, 0), COALESCE(a.messages, 0), COALESCE(a.tokens, 0),
               COALESCE(a.bytes, 0), COALESCE(a.cost, 0))
)
SELECT d.user_id, d.org_id, d.period_start, d.kind, v.metric, v.recorded, v.actual, v.actual - v.recorded AS delta
  FROM differing d
 CROSS JOIN LATERAL (VALUES
       ('requests', COALESCE(d.r_requests, 0)::numeric, COALESCE(d.a_requests, 0)::numeric),
       ('messages', COALESCE(d.r_messages, 0)::numeric, COALESCE(d.a_messages, 0)::numeric),
       ('tokens',   COALESCE(d.r_tokens, 0)::numeric,   COALESCE(d.a_tokens, 0)::numeric),
       ('bytes',    COALESCE(d.r_bytes, 0)::numeric,    COALESCE(d.a_bytes, 0)::numeric),
       ('cost',     COALESCE(d.r_cost, 0),              COALESCE(d.a_cost, 0))
       ) AS v (metric, recorded, actual)
 WHERE v.recorded <> v.actual
 ORDER BY 1, 2, 3, 4, 5
