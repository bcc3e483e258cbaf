-- Deliveries still undelivered alerts.expire_after after their alert's period ended are
-- `expired`, whatever their endpoint's state. Rows of a live claim are left alone.
-- $1 now, $2 alerts.expire_after in seconds, $3 one user id (personal alerts only) or NULL
-- for everyone.
UPDATE webhook_deliveries d
   SET status = 'expired',
       leased_until = NULL,
       updated_at = now()
  FROM quota_alerts a
 WHERE a.id = d.alert_id
   AND (d.status = 'pending' OR (d.status = 'sending' AND d.leased_until <= $1))
   AND a.period_end + make_interval(secs => $2) <= $1
   AND ($3::bigint IS NULL OR (a.user_id = $3 AND a.org_id = 0))
