-- Marks the `running` runs of job $1 (its name) abandoned, finished now, with an error naming
-- the process that ran them (host, pid). Run only while holding the job's advisory lock: then
-- no live process is running the job, so those rows were left by a crash.
UPDATE job_runs
   SET status = 'abandoned', finished_at = now(),
       error = 'the process running it (' || host || ' pid ' || pid || ') ended before it finished'
 WHERE job = $1 AND status = 'running'
