-- Period step 12: the per-kind sums of the spans located in existing periods
-- (period_placed, `located`) are added to those periods' per-kind rows.
INSERT INTO usage_period_kind_totals AS t
       (user_id, org_id, period, period_start, kind, requests, messages, tokens, bytes, cost)
SELECT x.user_id, x.org_id, x.period, x.period_start, x.kind, sum(x.requests),
       sum(x.messages), sum(x.tokens), sum(x.bytes), sum(x.cost)
  FROM (SELECT k.user_id, k.org_id, p.period, p.period_start, k.kind, k.requests,
               k.messages, k.tokens, k.bytes, k.cost
          FROM period_sums k
          JOIN period_placed p ON p.user_id = k.user_id AND p.org_id = k.org_id
           AND p.period = 'day' AND p.natural_start = k.day_start
           AND p.placement = 'located'
         WHERE NOT k.day_total
        UNION ALL
        SELECT k.user_id, k.org_id, p.period, p.period_start, k.kind, k.requests,
               k.messages, k.tokens, k.bytes, k.cost
          FROM period_sums k
          JOIN period_placed p ON p.user_id = k.user_id AND p.org_id = k.org_id
           AND p.period = 'month' AND p.natural_start = k.month_start
           AND p.placement = 'located'
         WHERE NOT k.day_total) x
 GROUP BY 1, 2, 3, 4, 5
ON CONFLICT (user_id, org_id, period, period_start, kind) DO UPDATE
   SET requests = t.requests + EXCLUDED.requests,
       messages = t.messages + EXCLUDED.messages,
       tokens   = t.tokens + EXCLUDED.tokens,
       bytes    = t.bytes + EXCLUDED.bytes,
       cost     = t.cost + EXCLUDED.cost
