-- Whether job $1 (its name) has succeeded for the tick $2 or later, read from job_runs: a
-- cron or catch-up run scheduled at or after it, or a manual run started at or after it. A
-- manual run limited to one user (`user_id`) or organization (`org_id` in its report's
-- details) did not do the tick's work.
SELECT EXISTS (
    SELECT 1 FROM job_runs
     WHERE job = $1 AND status = 'succeeded'
       AND ((trigger <> 'manual' AND scheduled_for >= $2)
         OR (trigger = 'manual' AND user_id IS NULL AND started_at >= $2
             AND report->'details'->'org_id' IS NULL))
) AS value
