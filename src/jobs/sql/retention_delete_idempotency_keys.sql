-- retention: deletes one batch of usage_idempotency_keys rows recorded before the cutoff $1
-- (ingest.idempotency_days before now, as usage_settings holds it), at most $2 rows
-- (retention.batch_size); the job repeats it, each batch its own transaction, until a batch
-- comes back short. usage_record() takes over an older key with a new event anyway.
DELETE FROM usage_idempotency_keys t USING (
    SELECT ctid FROM usage_idempotency_keys WHERE recorded_at < $1 LIMIT $2
) doomed WHERE t.ctid = doomed.ctid
