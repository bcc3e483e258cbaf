-- Before claiming: alerts nobody wants any more become `suppressed` — the recipient turned
-- alerts off; for an organization's alert, the organization turned them off, or the
-- recipient is no longer one of its owners or admins — or `unsubscribed` — the recipient's
-- users.alert_emails no longer includes their kind (quota and forecast alerts: `quota`;
-- credit alerts: `credit`), after a one-click unsubscribe for instance — and alerts still undelivered
-- alerts.expire_after after their period ended become `expired`. Rows of a live claim
-- (`sending` within its lease) are left alone.
-- $1 now, $2 alerts.expire_after in seconds, $3 one user id (personal alerts only) or NULL
-- for everyone.
WITH waiting AS (
    SELECT a.id,
           u.alerts_enabled
           AND (a.org_id = 0
                OR EXISTS (SELECT 1 FROM organizations o
                             JOIN organization_members m ON m.org_id = o.id
                            WHERE o.id = a.org_id AND o.alerts_enabled
                              AND m.user_id = a.user_id AND m.role IN ('owner', 'admin'))) AS wanted,
           u.alert_emails IN ('all', CASE WHEN a.alert LIKE 'credit.%' THEN 'credit' ELSE 'quota' END)
               AS subscribed
      FROM quota_alerts a
      JOIN users u ON u.id = a.user_id
     WHERE (a.status = 'pending' OR (a.status = 'sending' AND a.leased_until <= $1))
       AND ($3::bigint IS NULL OR (a.user_id = $3 AND a.org_id = 0))
)
UPDATE quota_alerts a
   SET status = CASE WHEN NOT w.wanted THEN 'suppressed'
                     WHEN NOT w.subscribed THEN 'unsubscribed'
                     ELSE 'expired' END,
       leased_until = NULL,
       updated_at = now()
  FROM waiting w
 WHERE a.id = w.id
   AND (a.status = 'pending' OR (a.status = 'sending' AND a.leased_until <= $1))
   AND (NOT w.wanted OR NOT w.subscribed OR a.period_end + make_interval(secs => $2) <= $1)
RETURNING a.status
