-- reset-daily / reset-monthly, step 5: open the next period for every user who was active in
-- a period just closed by rollover. It starts where the closed one ended and ends at the next
-- natural boundary (usage_period_bounds), or earlier if a later period already exists. Where
-- `aggregate` already opened it, nothing changes. A successor that has itself ended (after
-- downtime) is closed by the next batch.
INSERT INTO usage_periods (user_id, period, period_start, period_end)
SELECT c.user_id, c.period, c.period_end, LEAST(b.period_end, nxt.period_start)
  FROM usage_closing c
  LEFT JOIN users u ON u.id = c.user_id
 CROSS JOIN LATERAL usage_period_bounds(u.timezone, u.billing_anchor_day, c.period, c.period_end) b
  LEFT JOIN LATERAL (SELECT up.period_start FROM usage_periods up
                      WHERE up.user_id = c.user_id AND up.period = c.period
                        AND up.period_start >= c.period_end
                      ORDER BY up.period_start LIMIT 1) nxt ON true
 WHERE c.close_reason = 'rollover'
   AND EXISTS (SELECT 1 FROM usage_closing_raw r
                WHERE r.user_id = c.user_id AND r.period = c.period AND r.period_start = c.period_start)
   AND nxt.period_start IS DISTINCT FROM c.period_end
ON CONFLICT DO NOTHING
