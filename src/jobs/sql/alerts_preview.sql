-- Dry run: the candidates not yet recorded, with the recipient (and, for an organization's
-- alert, the organization and the recipient's role), in a stable order. `carries_webhook`:
-- the alert its webhooks would go with: every personal one to be sent (or left unemailed by
-- the recipient's email preference: webhooks still go), and one per
-- organization's threshold never decided before (the first recipient to be emailed), as
-- webhooks_decide.sql chooses.
-- Reads alert_candidates (alerts_candidates.sql).
SELECT c.user_id, c.org_id, u.email, COALESCE(o.name, '') AS org_name,
       COALESCE(o.alerts_enabled, true) AS org_alerts_enabled,
       COALESCE(m.role, '') AS role, c.metric, c.period, c.kind, c.period_start, c.threshold,
       c.used_value, c.limit_value, c.status, c.alert,
       c.status IN ('pending', 'unsubscribed')
       AND (c.org_id = 0
            OR (c.user_id = min(c.user_id) FILTER (WHERE c.status IN ('pending', 'unsubscribed'))
                                OVER (PARTITION BY c.org_id, c.metric, c.period, c.kind,
                                                   c.period_start, c.threshold, c.alert,
                                                   c.grant_id)
                AND NOT EXISTS (SELECT 1 FROM quota_alerts b
                                 WHERE b.org_id = c.org_id AND b.metric = c.metric
                                   AND b.period = c.period AND b.kind = c.kind
                                   AND b.period_start = c.period_start
                                   AND b.threshold = c.threshold AND b.alert = c.alert
                                   AND b.grant_id = c.grant_id))) AS carries_webhook
  FROM alert_candidates c
  JOIN users u ON u.id = c.user_id
  LEFT JOIN organizations o ON o.id = c.org_id
  LEFT JOIN organization_members m ON m.org_id = c.org_id AND m.user_id = c.user_id
 WHERE NOT EXISTS (SELECT 1 FROM quota_alerts a
                    WHERE a.user_id = c.user_id AND a.org_id = c.org_id AND a.metric = c.metric
                      AND a.period = c.period AND a.kind = c.kind
                      AND a.period_start = c.period_start AND a.threshold = c.threshold
                      AND a.alert = c.alert AND a.grant_id = c.grant_id)
 ORDER BY c.org_id, c.user_id, c.period, c.metric, c.kind, c.alert, c.threshold
