-- The run of job $1 (its name) currently holding the job (for "skipped: held by …"
-- messages): its latest `running` row in job_runs, with its report's summary.
SELECT id, job, trigger, scheduled_for, started_at, finished_at, status,
       report->>'summary' AS summary, error, host, pid, user_id
  FROM job_runs
 WHERE job = $1 AND status = 'running'
 ORDER BY started_at DESC
 LIMIT 1
