-- retention: deletes one batch of job_runs rows of finished runs started before the cutoff
-- $1 (retention.job_runs_days before now), at most $2 rows (retention.batch_size); the job
-- repeats it, each batch its own transaction, until a batch comes back short. The run that
-- deleted events up to the latest instant stays: it tells a rebuild which days lost their
-- raw events (see `events_horizon`); it is the run retention_recorded_cutoff.sql finds,
-- written out in full below.
DELETE FROM job_runs t USING (
    SELECT ctid FROM job_runs
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
     LIMIT $2
) doomed WHERE t.ctid = doomed.ctid
