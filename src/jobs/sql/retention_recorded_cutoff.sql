-- The succeeded retention run that deleted events up to the latest instant, with that
-- instant (its report's usage_events cutoff). A dry run records no run, so every row here
-- deleted. Several runs can have the same cutoff; the newest is taken.
SELECT id, started_at,
       (report #>> '{details,tables,usage_events,cutoff}')::timestamptz AS cutoff
  FROM job_runs
 WHERE job = 'retention'
   AND status = 'succeeded'
   AND report #>> '{details,tables,usage_events,cutoff}' IS NOT NULL
 ORDER BY cutoff DESC, id DESC
 LIMIT 1
