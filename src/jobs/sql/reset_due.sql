-- reset-daily / reset-monthly, step 1: pick a batch of open periods of one kind that have
-- ended ($1 = 'day' | 'month', $2 = now, $3 = batch size), oldest first, and lock them.
-- A period belongs to a user's personal usage (user_id, org_id 0) or to an organization
-- (user_id 0, org_id); user id 0 is a legal user, so rows are always keyed by both. The
-- batch goes into the temporary table the next steps read, with its subject's zone, anchor
-- and plan (usage_subjects; NULL zone: no users or organizations row, counted as UTC), and
-- the plan's limits once reset_limits.sql has run; close_reason NULL
-- would mean "reconcile only, stay open" (used by manual resets for the new period).
CREATE TEMP TABLE usage_closing ON COMMIT DROP AS
WITH due AS (
    SELECT up.user_id, up.org_id, up.period, up.period_start, up.period_end
      FROM usage_periods up
     WHERE up.status = 'open'
       AND up.period = $1
       AND up.period_end <= $2
     ORDER BY up.period_end, up.user_id, up.org_id
     LIMIT $3
       FOR UPDATE
)
SELECT d.user_id, d.org_id, d.period, d.period_start, d.period_end,
       'rollover'::text AS close_reason,
       su.timezone AS zone, su.billing_anchor_day::int AS anchor, su.plan_id,
       NULL::jsonb AS limits                              -- set by reset_limits.sql
  FROM due d
  LEFT JOIN usage_subjects su ON su.user_id = d.user_id AND su.org_id = d.org_id
