-- retention: deletes one batch of quota_alerts rows whose period started before the cutoff
-- $1 (retention.quota_alerts_months), at most $2 rows (retention.batch_size); the job repeats
-- it, each batch its own transaction, until a batch comes back short. Alerts still waiting to
-- be delivered (`pending`, `sending`) are never deleted.
DELETE FROM quota_alerts t USING (
    SELECT ctid FROM quota_alerts
     WHERE period_start < $1 AND status NOT IN ('pending', 'sending')
     LIMIT $2
) doomed WHERE t.ctid = doomed.ctid
