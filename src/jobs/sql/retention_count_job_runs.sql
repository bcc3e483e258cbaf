-- retention --dry-run: the job_runs rows retention_delete_job_runs.sql would delete for the
-- cutoff $1 (retention.job_runs_days before now): finished runs started before it, except
-- the run retention_recorded_cutoff.sql finds (written out in full below).
SELECT count(*) AS n FROM job_runs
 WHERE started_at < $1 AND status <> 'running'
   AND id NOT IN (SELECT id FROM (
           SELECT id, started_at,
                  (report #>> '{details,tables,usage_events,cutoff}')::timestamptz AS cutoff
             FROM job_runs
            WHERE job = 'retention'
              AND status = 'succeeded'
              AND report #>> '{details,tables,usage_events,cutoff}' IS NOT NULL
            ORDER BY cutoff DESC, id DESC
            LIMIT 1) kept)
