-- A manual reset's two halves as the reconciliation reads them (usage_closing, with the
-- columns reset_due.sql gives): the period from $5 to $4 (now), closed `manual`, and the new
-- one from $4 to $6, reconciled and left open. Events already counted in the old period that
-- belong after now move to the new one. Subject ($1 user_id, $2 org_id), kind $3, zone $7,
-- anchor $8, plan $9; its limits are set by reset_limits.sql.
CREATE TEMP TABLE usage_closing ON COMMIT DROP AS
SELECT $1::bigint AS user_id, $2::bigint AS org_id, $3::text AS period, v.period_start,
       v.period_end, v.close_reason, $7::text AS zone, $8::int AS anchor, $9::bigint AS plan_id,
       NULL::jsonb AS limits
  FROM (VALUES ($5::timestamptz, $4::timestamptz, 'manual'::text),
               ($4::timestamptz, $6::timestamptz, NULL::text))
       AS v (period_start, period_end, close_reason)
