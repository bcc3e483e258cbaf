-- The events set aside so far (aggregate_set_aside) leave the batch (aggregate_batch).
DELETE FROM aggregate_batch b
 USING aggregate_set_aside s
 WHERE b.id = s.event_id AND b.created_at = s.created_at
