-- Reconciliation, after step 1: what each period in `usage_closing` keeps of its subject's
-- plan when it closes, the plan's limits for the period kind as a JSON array of {metric,
-- kind, max_value} (NULL when the plan limits nothing there, or there is no plan). Each
-- plan's array is built once, not once per period.
UPDATE usage_closing c
   SET limits = s.limits
  FROM (SELECT l.plan_id, l.period,
               jsonb_agg(jsonb_build_object('metric', l.metric, 'kind', l.kind,
                                            'max_value', l.max_value)
                         ORDER BY l.metric, l.kind) AS limits
          FROM plan_limits l
         GROUP BY l.plan_id, l.period) s
 WHERE s.plan_id = c.plan_id AND s.period = c.period
