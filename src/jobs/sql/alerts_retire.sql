-- Before claiming: alerts of users who have since turned alerts off become `suppressed`;
-- alerts still undelivered alerts.expire_after after their period ended become `expired`.
-- Rows of a live claim (`sending` within its lease) are left alone.
-- $1 now, $2 alerts.expire_after in seconds, $3 one user id or NULL for everyone.
UPDATE quota_alerts a
   SET status = CASE WHEN NOT u.alerts_enabled THEN 'suppressed' ELSE 'expired' END,
       leased_until = NULL,
       updated_at = now()
  FROM users u
 WHERE u.id = a.user_id
   AND (a.status = 'pending' OR (a.status = 'sending' AND a.leased_until <= $1))
   AND (NOT u.alerts_enabled OR a.period_end + make_interval(secs => $2) <= $1)
   AND ($3::bigint IS NULL OR a.user_id = $3)
RETURNING a.status
