-- The cron or catch-up run of job $1 (its name) holding the tick $2 (its scheduled_for; see
-- the unique index job_runs_one_run_per_tick): one running, succeeded or failed, read from
-- job_runs with its report's summary. `abandoned` and `skipped` rows hold no tick.
SELECT id, job, trigger, scheduled_for, started_at, finished_at, status,
       report->>'summary' AS summary, error, host, pid, user_id
  FROM job_runs
 WHERE job = $1 AND scheduled_for = $2 AND trigger IN ('cron', 'catchup')
   AND status NOT IN ('abandoned', 'skipped')
