-- Period step 10: the spans of period_placed `located` in an existing period are added to its
-- totals.
UPDATE usage_periods up
   SET requests = up.requests + s.requests,
       messages = up.messages + s.messages,
       tokens   = up.tokens + s.tokens,
       bytes    = up.bytes + s.bytes,
       cost     = up.cost + s.cost
  FROM (SELECT user_id, org_id, period, period_start, sum(requests) AS requests,
               sum(messages) AS messages, sum(tokens) AS tokens, sum(bytes) AS bytes,
               sum(cost) AS cost
          FROM period_placed WHERE placement = 'located' GROUP BY 1, 2, 3, 4) s
 WHERE up.user_id = s.user_id AND up.org_id = s.org_id AND up.period = s.period
   AND up.period_start = s.period_start
