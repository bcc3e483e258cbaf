-- When each job of $1 (their names, text[]) last succeeded: the finished_at of its newest
-- succeeded run in job_runs, as seconds since the epoch; a job without one has no row.
-- Walks job_runs_job_started_idx from the newest run of each job to its latest success.
SELECT j.job, extract(epoch FROM r.finished_at)::float8 AS at
  FROM unnest($1::text[]) AS j(job)
 CROSS JOIN LATERAL (
       SELECT finished_at FROM job_runs
        WHERE job = j.job AND status = 'succeeded' AND finished_at IS NOT NULL
        ORDER BY started_at DESC
        LIMIT 1) r
