-- Period step 16: every event of period_per_event is added, with its kind, to the period
-- that contains it (the one starting last at or before it) and to that period's per-kind
-- rows.
WITH located AS (
    SELECT b.user_id, b.org_id, b.period, up.period_start, b.kind,
           count(*) AS requests, sum(b.messages) AS messages, sum(b.tokens) AS tokens,
           sum(b.bytes) AS bytes, sum(b.cost) AS cost
      FROM period_per_event b
     CROSS JOIN LATERAL (SELECT up.period_start FROM usage_periods up
                          WHERE up.user_id = b.user_id AND up.org_id = b.org_id
                            AND up.period = b.period AND up.period_start <= b.created_at
                          ORDER BY up.period_start DESC LIMIT 1) up
     GROUP BY 1, 2, 3, 4, 5
), per_kind AS (
    INSERT INTO usage_period_kind_totals AS t
           (user_id, org_id, period, period_start, kind, requests, messages, tokens, bytes, cost)
    SELECT user_id, org_id, period, period_start, kind, requests, messages, tokens, bytes, cost
      FROM located
    ON CONFLICT (user_id, org_id, period, period_start, kind) DO UPDATE
       SET requests = t.requests + EXCLUDED.requests,
           messages = t.messages + EXCLUDED.messages,
           tokens   = t.tokens + EXCLUDED.tokens,
           bytes    = t.bytes + EXCLUDED.bytes,
           cost     = t.cost + EXCLUDED.cost
)
UPDATE usage_periods up
   SET requests = up.requests + s.requests,
       messages = up.messages + s.messages,
       tokens   = up.tokens + s.tokens,
       bytes    = up.bytes + s.bytes,
       cost     = up.cost + s.cost
  FROM (SELECT user_id, org_id, period, period_start, sum(requests) AS requests,
               sum(messages) AS messages, sum(tokens) AS tokens, sum(bytes) AS bytes,
               sum(cost) AS cost
          FROM located GROUP BY 1, 2, 3, 4) s
 WHERE up.user_id = s.user_id AND up.org_id = s.org_id AND up.period = s.period
   AND up.period_start = s.period_start
