-- Rollover, step 4 when step 3 found no drift: the recorded totals of every period in
-- `usage_closing` and of its per-kind rows equal the raw events, so they stay as they are
-- (rewriting equal rows only leaves dead tuples). Closes the periods ($1 = now) and snapshots
-- the subject's plan and that plan's limits for the period kind, as reset_apply.sql does.
WITH plan_snapshots AS MATERIALIZED (
    SELECT l.plan_id, l.period,
           jsonb_agg(jsonb_build_object('metric', l.metric, 'kind', l.kind, 'max_value', l.max_value)
                     ORDER BY l.metric, l.kind) AS limits
      FROM plan_limits l
     GROUP BY l.plan_id, l.period
)
UPDATE usage_periods up
   SET status       = 'closed',
       close_reason = c.close_reason,
       closed_at    = $1,
       plan_id      = c.plan_id,
       limits       = COALESCE(s.limits, '[]'::jsonb)
  FROM usage_closing c
  LEFT JOIN plan_snapshots s ON s.plan_id = c.plan_id AND s.period = c.period
 WHERE up.user_id = c.user_id AND up.org_id = c.org_id AND up.period = c.period
   AND up.period_start = c.period_start
