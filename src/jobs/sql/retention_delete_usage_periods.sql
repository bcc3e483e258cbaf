-- retention: deletes one batch of usage_periods rows that ended before the cutoff $1
-- (retention.usage_periods_months), at most $2 rows (retention.batch_size); the job repeats
-- it, each batch its own transaction, until a batch comes back short. Closed periods only;
-- their per-kind totals (usage_period_kind_totals) go with them (ON DELETE CASCADE).
DELETE FROM usage_periods t USING (
    SELECT ctid FROM usage_periods WHERE status = 'closed' AND period_end < $1 LIMIT $2
) doomed WHERE t.ctid = doomed.ctid
