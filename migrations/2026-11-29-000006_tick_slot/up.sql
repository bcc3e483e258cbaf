-- A skipped run (the job's lock was busy) does not hold its tick: the daemon that lost the
-- lock race may write `skipped` before the winner records `running`, and the tick must still
-- run, now or at catch-up. Abandoned runs keep not counting, as before.
DROP INDEX job_runs_one_run_per_tick;
CREATE UNIQUE INDEX job_runs_one_run_per_tick ON job_runs (job, scheduled_for)
    WHERE trigger IN ('cron', 'catchup') AND status NOT IN ('abandoned', 'skipped');
