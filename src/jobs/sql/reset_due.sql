-- reset-daily / reset-monthly, step 1: pick a batch of open periods of one kind that have
-- ended ($1 = 'day' | 'month', $2 = now, $3 = batch size), oldest first, and lock them.
-- The batch goes into the temporary table the next steps read; close_reason NULL would mean
-- "reconcile only, stay open" (used by manual resets for the new period).
CREATE TEMP TABLE usage_closing ON COMMIT DROP AS
SELECT up.user_id, up.period, up.period_start, up.period_end, 'rollover'::text AS close_reason
  FROM usage_periods up
 WHERE up.status = 'open'
   AND up.period = $1
   AND up.period_end <= $2
 ORDER BY up.period_end, up.user_id
 LIMIT $3
   FOR UPDATE
