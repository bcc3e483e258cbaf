-- The $1 most recent runs of job_runs, newest first, with their report's summary.
SELECT id, job, trigger, scheduled_for, started_at, finished_at, status,
       report->>'summary' AS summary, error, host, pid, user_id
  FROM job_runs
 ORDER BY started_at DESC, id DESC
 LIMIT $1
