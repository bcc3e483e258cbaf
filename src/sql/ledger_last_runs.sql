-- The latest run of each job in job_runs, with its report's summary. No binds.
SELECT DISTINCT ON (job)
       id, job, trigger, scheduled_for, started_at, finished_at, status,
       report->>'summary' AS summary, error, host, pid, user_id
  FROM job_runs
 ORDER BY job, started_at DESC, id DESC
