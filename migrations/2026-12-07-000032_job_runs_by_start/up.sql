-- `--status` lists the newest runs of all jobs: with `aggregate` every 5 seconds job_runs holds
-- about 1.6 M rows (90 days), which that listing sorted whole (0.46 s); this index serves it
-- from the newest end.
CREATE INDEX job_runs_started_idx ON job_runs (started_at DESC, id DESC);
