-- Monthly tables of usage_events that a retention run detached but did not get to drop (it
-- was stopped between the two transactions): tables named usage_events_YYYY_MM in the schema
-- that are no longer partitions. The next run drops them (usage_drop_detached_partition).
SELECT c.relname::text AS name
  FROM pg_class c
 WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'
   AND c.relname ~ '^usage_events_[0-9]{4}_(0[1-9]|1[0-2])$'
   AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid)
 ORDER BY 1
