DROP INDEX job_runs_started_idx;
