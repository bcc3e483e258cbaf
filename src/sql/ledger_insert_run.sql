-- Inserts a run into job_runs and returns its id; no row when the tick already has a run that
-- holds it (unique index job_runs_one_run_per_tick: one running, succeeded or failed, so
-- another daemon got there first). A `skipped` row never conflicts.
-- $1 job, $2 trigger ('cron' | 'catchup' | 'manual'), $3 scheduled_for, $4 status, $5 host,
-- $6 pid, $7 user_id (NULL: not limited to one user), $8 error (NULL: none), $9 whether the
-- run is already finished (then finished_at is now).
INSERT INTO job_runs (job, trigger, scheduled_for, status, host, pid, user_id, error, finished_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, CASE WHEN $9 THEN now() END)
ON CONFLICT DO NOTHING
RETURNING id
