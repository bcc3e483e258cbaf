-- Period step 14, period_homeless: the events of period_per_event that no period contains
-- yet, one (the earliest) per subject, period kind and local day. Steps 14 and 15 repeat
-- until none is left.
CREATE TEMP TABLE period_homeless ON COMMIT DROP AS
SELECT b.user_id, b.org_id, b.period, min(b.created_at) AS first_at
  FROM period_per_event b
  JOIN aggregate_subjects z ON z.user_id = b.user_id AND z.org_id = b.org_id
 WHERE NOT EXISTS (SELECT 1 FROM usage_periods up
                    WHERE up.user_id = b.user_id AND up.org_id = b.org_id
                      AND up.period = b.period
                      AND up.period_start <= b.created_at AND up.period_end > b.created_at)
 GROUP BY b.user_id, b.org_id, b.period, (b.created_at AT TIME ZONE z.zone)::date
