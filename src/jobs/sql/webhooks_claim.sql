-- Claims a batch of due deliveries to enabled, configured endpoints (as alerts_claim.sql
-- does for emails: pending and due, or a crashed run's claim whose lease ran out). Each claim
-- counts as an attempt. Returns what the request body is built from: for an organization's
-- alert, the organization's id, name and time zone.
-- $1 now, $2 alerts.lease in seconds, $3 batch size, $4 configured endpoint keys (text[]),
-- $5 one user id (personal alerts only) or NULL for everyone.
WITH due AS (
    SELECT d.id, a.user_id, a.org_id
      FROM webhook_deliveries d
      JOIN webhook_endpoints e ON e.id = d.endpoint_id
      JOIN quota_alerts a ON a.id = d.alert_id
     WHERE ((d.status = 'pending' AND d.next_attempt_at <= $1)
            OR (d.status = 'sending' AND d.leased_until <= $1))
       AND e.disabled_at IS NULL
       AND e.endpoint_key = ANY ($4::text[])
       AND ($5::bigint IS NULL OR (a.user_id = $5 AND a.org_id = 0))
     ORDER BY d.next_attempt_at, d.id
     LIMIT $3
       FOR UPDATE OF d SKIP LOCKED
)
UPDATE webhook_deliveries d
   SET status = 'sending',
       leased_until = $1 + make_interval(secs => $2),
       attempts = d.attempts + 1,
       updated_at = now()
  FROM due
  JOIN users u ON u.id = due.user_id
  LEFT JOIN organizations o ON o.id = due.org_id,
       quota_alerts a, webhook_endpoints e
 WHERE d.id = due.id
   AND a.id = d.alert_id
   AND e.id = d.endpoint_id
RETURNING d.id, d.webhook_id, d.attempts, e.endpoint_key, a.user_id, a.org_id,
          COALESCE(o.name, '') AS org_name, a.metric, a.period, a.kind, a.period_start,
          a.period_end, a.threshold, a.used_value, a.limit_value, a.decided_at,
          COALESCE(o.timezone, u.timezone) AS timezone, a.alert, a.grant_id,
          a.projected_exhaustion
