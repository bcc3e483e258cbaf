-- reset-daily / reset-monthly, step 5: open the next period for every subject (a user's
-- personal usage or an organization) that was active in a period just closed by rollover.
-- It starts where the closed one ended and ends at the next natural boundary in the
-- subject's zone and anchor (usage_period_bounds), or earlier if a later period already
-- exists (usage_period_between). Where `aggregate` already opened it, nothing changes. A
-- successor that has itself ended (after downtime) is closed by the next batch. Bounds are
-- computed once per (zone, anchor, end), not once per subject: subjects cluster in a few
-- zones.
WITH ended AS (
    SELECT c.user_id, c.org_id, c.period, c.period_end,
           COALESCE(c.zone, '') AS zone_key,          -- '' (no users/organizations row) counts as UTC
           COALESCE(c.anchor, 0) AS anchor_key
      FROM usage_closing c
     WHERE c.close_reason = 'rollover'
       AND EXISTS (SELECT 1 FROM usage_closing_raw r
                    WHERE r.user_id = c.user_id AND r.org_id = c.org_id AND r.period = c.period
                      AND r.period_start = c.period_start)
), boundaries AS MATERIALIZED (
    -- MATERIALIZED: inlined, the planner calls usage_period_bounds once per subject instead.
    SELECT g.zone_key, g.anchor_key, g.period, g.period_end, b.period_end AS next_end
      FROM (SELECT DISTINCT zone_key, anchor_key, period, period_end FROM ended) g
     CROSS JOIN LATERAL usage_period_bounds(g.zone_key, NULLIF(g.anchor_key, 0), g.period, g.period_end) b
)
INSERT INTO usage_periods (user_id, org_id, period, period_start, period_end)
SELECT e.user_id, e.org_id, e.period, t.period_start, t.period_end
  FROM ended e
  JOIN boundaries b USING (zone_key, anchor_key, period, period_end)
  LEFT JOIN LATERAL (SELECT up.period_start FROM usage_periods up
                      WHERE up.user_id = e.user_id AND up.org_id = e.org_id AND up.period = e.period
                        AND up.period_start >= e.period_end
                      ORDER BY up.period_start LIMIT 1) nxt ON true
 CROSS JOIN LATERAL usage_period_between(e.period_end, b.next_end, e.period_end,
                                         nxt.period_start) t
 WHERE nxt.period_start IS DISTINCT FROM e.period_end
ON CONFLICT DO NOTHING
