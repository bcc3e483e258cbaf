-- Rollover, step 4 when step 3 found no drift: the recorded totals of every period in
-- `usage_closing` and of its per-kind rows equal the raw events, so they stay as they are
-- (rewriting equal rows only leaves dead tuples). Closes the periods ($1 = now) with the
-- snapshot of the subject's plan and its limits (reset_limits.sql), as reset_apply.sql does.
-- Run by key (see `by_key` in periods.rs).
UPDATE usage_periods up
   SET status       = 'closed',
       close_reason = c.close_reason,
       closed_at    = $1,
       plan_id      = c.plan_id,
       limits       = COALESCE(c.limits, '[]'::jsonb)
  FROM usage_closing c
 WHERE up.user_id = c.user_id AND up.org_id = c.org_id AND up.period = c.period
   AND up.period_start = c.period_start
