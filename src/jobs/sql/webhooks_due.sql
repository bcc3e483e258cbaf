-- alerts `--dry-run`: how many recorded webhook deliveries (webhook_deliveries, with their
-- alert in quota_alerts) are due at $1: pending ones whose next attempt has come, and
-- `sending` ones whose lease has run out. $2 = the user of a run limited to one (`--user`:
-- their personal alerts only), NULL for every delivery.
SELECT count(*) AS n FROM webhook_deliveries d JOIN quota_alerts a ON a.id = d.alert_id
 WHERE ((d.status = 'pending' AND d.next_attempt_at <= $1)
        OR (d.status = 'sending' AND d.leased_until <= $1))
   AND ($2::bigint IS NULL OR (a.user_id = $2 AND a.org_id = 0))
