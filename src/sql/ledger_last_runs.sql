-- The latest run of each job of $1 (their names, text[]), with its report's summary. One
-- short walk of job_runs_job_started_idx per job, not the whole table: job_runs keeps a row
-- per run (17,280 a day of `aggregate` at its default schedule).
SELECT r.id, r.job, r.trigger, r.scheduled_for, r.started_at, r.finished_at, r.status,
       r.summary, r.error, r.host, r.pid, r.user_id
  FROM unnest($1::text[]) AS j (job)
 CROSS JOIN LATERAL (
       SELECT id, job, trigger, scheduled_for, started_at, finished_at, status,
              report->>'summary' AS summary, error, host, pid, user_id
         FROM job_runs
        WHERE job = j.job
        ORDER BY started_at DESC, id DESC
        LIMIT 1) r
