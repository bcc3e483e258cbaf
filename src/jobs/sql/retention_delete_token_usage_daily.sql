-- retention: deletes one batch of token_usage_daily rows older than the cutoff $1
-- (retention.token_usage_daily_months), at most $2 rows (retention.batch_size); the job
-- repeats it, each batch its own transaction, until a batch comes back short. `day` is a
-- local date; a day is dropped once it lies wholly before the cutoff date.
DELETE FROM token_usage_daily t USING (
    SELECT ctid FROM token_usage_daily WHERE day < ($1 AT TIME ZONE 'UTC')::date LIMIT $2
) doomed WHERE t.ctid = doomed.ctid
