-- The old index lets one non-abandoned row per tick exist, skipped ones included. Skipped
-- rows that would break it (a tick that also ran, or was skipped more than once) say only
-- that a lock was busy; they are dropped so the index can be built.
DELETE FROM job_runs s
 WHERE s.status = 'skipped' AND s.trigger IN ('cron', 'catchup')
   AND EXISTS (SELECT 1 FROM job_runs o
                WHERE o.job = s.job AND o.scheduled_for = s.scheduled_for AND o.id <> s.id
                  AND o.trigger IN ('cron', 'catchup') AND o.status <> 'abandoned'
                  AND (o.status <> 'skipped' OR o.id < s.id));
DROP INDEX job_runs_one_run_per_tick;
CREATE UNIQUE INDEX job_runs_one_run_per_tick ON job_runs (job, scheduled_for)
    WHERE trigger IN ('cron', 'catchup') AND status <> 'abandoned';
