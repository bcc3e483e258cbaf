-- Period step 5, period_near: the existing periods near the batch, per subject and period
-- kind: those that may hold some of its events. A period is shorter than 32 days, so none
-- starting earlier reaches the batch. Reads period_sums, usage_periods.
CREATE TEMP TABLE period_near ON COMMIT DROP AS
WITH reach AS (
    SELECT user_id, org_id, min(LEAST(day_start, first_at)) - interval '32 days' AS day_low,
           max(GREATEST(day_end, last_at)) AS day_high,
           min(LEAST(month_start, first_at)) - interval '32 days' AS month_low,
           max(GREATEST(month_end, last_at)) AS month_high
      FROM period_sums WHERE day_total GROUP BY 1, 2
)
SELECT up.user_id, up.org_id, up.period, up.period_start, up.period_end
  FROM reach r
  JOIN usage_periods up ON up.user_id = r.user_id AND up.org_id = r.org_id
   AND up.period = 'day' AND up.period_start >= r.day_low AND up.period_start <= r.day_high
UNION ALL
SELECT up.user_id, up.org_id, up.period, up.period_start, up.period_end
  FROM reach r
  JOIN usage_periods up ON up.user_id = r.user_id AND up.org_id = r.org_id
   AND up.period = 'month' AND up.period_start >= r.month_low
   AND up.period_start <= r.month_high
