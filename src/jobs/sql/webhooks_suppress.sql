-- alerts, without the email channel: the alerts decided at $1 (decided_at) and still
-- `pending` in quota_alerts are recorded as `suppressed` (nobody is emailed) while their
-- webhooks go out. $2 = the user of a run limited to one (`--user`: their personal alerts
-- only), NULL for every alert.
UPDATE quota_alerts SET status = 'suppressed', updated_at = now()
 WHERE decided_at = $1 AND status = 'pending'
   AND ($2::bigint IS NULL OR (user_id = $2 AND org_id = 0))
