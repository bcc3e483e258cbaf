-- A manual reset's period: the subject's ($1 user_id, $6 org_id) period of kind $2 that
-- contains $3 (now), or, status `missing`, the one it would be: its natural bounds in zone $4
-- with anchor $5 (usage_period_bounds) trimmed to its neighbours (usage_period_between).
SELECT COALESCE(cur.period_start, t.period_start) AS period_start,
       COALESCE(cur.period_end, t.period_end) AS period_end,
       COALESCE(cur.status, 'missing') AS status
  FROM usage_period_bounds($4, $5, $2, $3) b
  LEFT JOIN usage_periods cur ON cur.user_id = $1 AND cur.org_id = $6 AND cur.period = $2
        AND cur.period_start <= $3 AND cur.period_end > $3
  LEFT JOIN LATERAL (SELECT max(up.period_end) AS period_end FROM usage_periods up
                      WHERE up.user_id = $1 AND up.org_id = $6 AND up.period = $2
                        AND up.period_end <= $3) prev ON true
  LEFT JOIN LATERAL (SELECT min(up.period_start) AS period_start FROM usage_periods up
                      WHERE up.user_id = $1 AND up.org_id = $6 AND up.period = $2
                        AND up.period_start > $3) nxt ON true
 CROSS JOIN LATERAL usage_period_between(b.period_start, b.period_end, prev.period_end,
                                         nxt.period_start) t
