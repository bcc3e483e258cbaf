-- Period step 15: a period for each row of period_homeless: the natural period of its event
-- (usage_period_bounds) trimmed to its neighbours (usage_period_between). Returns the periods opened; none while homeless events are left would mean
-- overlapping periods, which the job refuses rather than miscount.
INSERT INTO usage_periods (user_id, org_id, period, period_start, period_end)
SELECT DISTINCT h.user_id, h.org_id, h.period, t.period_start, t.period_end
  FROM period_homeless h
  JOIN aggregate_subjects z ON z.user_id = h.user_id AND z.org_id = h.org_id
 CROSS JOIN LATERAL usage_period_bounds(z.zone, z.anchor, h.period, h.first_at) b
  LEFT JOIN LATERAL (SELECT up.period_end FROM usage_periods up
                      WHERE up.user_id = h.user_id AND up.org_id = h.org_id
                        AND up.period = h.period AND up.period_start <= h.first_at
                      ORDER BY up.period_start DESC LIMIT 1) prev ON true
  LEFT JOIN LATERAL (SELECT up.period_start FROM usage_periods up
                      WHERE up.user_id = h.user_id AND up.org_id = h.org_id
                        AND up.period = h.period AND up.period_start > h.first_at
                      ORDER BY up.period_start LIMIT 1) nxt ON true
 CROSS JOIN LATERAL usage_period_between(b.period_start, b.period_end, prev.period_end,
                                         nxt.period_start) t
ON CONFLICT DO NOTHING
