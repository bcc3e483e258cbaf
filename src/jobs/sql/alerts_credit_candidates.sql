-- alerts_credit_candidates: adds to alert_candidates (alerts_candidates.sql) the credit alerts
-- the grants call for right now. For each subject, metric, period kind and event kind with
-- grants active at $1: `granted` (their amounts), the balance (what the aggregate job has
-- recorded them giving, usage_grant_draws, taken off) and the newest of them (`grant_id`,
-- the epoch: only a new grant raises a balance, so each alert is decided once per epoch,
-- UNIQUE with the rest of the key). A credit alert's used_value and limit_value are what
-- the grants not used up gave and granted (all active grants' once none is left):
-- - `credit.depleted` when the balance is 0: every active grant is used up (with `credit.low`
--   of the same epoch superseded, as a quota alert's lower thresholds are when usage jumps
--   past them);
-- - `credit.low` when it is below $2 percent of what the grants not used up yet granted (a
--   grant used up long ago does not make a new one look low);
-- - `credit.recovered` when the balance is above 0 and the key's latest `credit.depleted`
--   is of an earlier epoch, with no recovery since: a new grant lifted a depleted balance.
-- Recipients as for quota alerts: the user, or an organization's owners and admins;
-- `suppressed` for those who turned alerts off, `unsubscribed` for those whose
-- users.alert_emails leaves credit alerts out. period_start is the epoch grant's start,
-- period_end the latest expiry of the active grants; threshold $2 for credit.low, 100 for
-- the others.
-- $1 now, $2 alerts.credit_low_percent (int), $3 one user id (personal grants only) or NULL.
INSERT INTO alert_candidates (user_id, org_id, metric, period, kind, period_start, period_end,
                              threshold, used_value, limit_value, status, alert, grant_id)
WITH drawn AS (
    SELECT d.grant_id, sum(d.drawn) AS drawn FROM usage_grant_draws d GROUP BY d.grant_id
), active AS (
    SELECT g.user_id, g.org_id, g.metric, g.period, g.kind, sum(g.amount) AS granted_all,
           sum(LEAST(COALESCE(d.drawn, 0), g.amount)) AS used_all,
           COALESCE(sum(g.amount) FILTER (WHERE COALESCE(d.drawn, 0) < g.amount), 0) AS granted_live,
           COALESCE(sum(COALESCE(d.drawn, 0)) FILTER (WHERE COALESCE(d.drawn, 0) < g.amount), 0) AS used_live,
           max(g.id) AS epoch, max(g.expires_at) AS expires_at
      FROM usage_grants g
      LEFT JOIN drawn d ON d.grant_id = g.id
     WHERE g.starts_at <= $1 AND $1 < LEAST(g.expires_at, COALESCE(g.voided_at, 'infinity'))
       AND ($3::bigint IS NULL OR (g.user_id = $3 AND g.org_id = 0))
     GROUP BY g.user_id, g.org_id, g.metric, g.period, g.kind
), called AS (
    SELECT a.*, x.alert, x.status,
           CASE WHEN a.granted_live = 0 THEN a.granted_all ELSE a.granted_live END AS granted,
           CASE WHEN a.granted_live = 0 THEN a.used_all ELSE a.used_live END AS used
      FROM active a
     CROSS JOIN LATERAL (VALUES ('credit.depleted', 'pending', a.granted_live = 0),
                                ('credit.low', CASE WHEN a.granted_live = 0 THEN 'superseded' ELSE 'pending' END,
                                 (a.granted_live - a.used_live) * 100 < a.granted_live * $2
                                 OR a.granted_live = 0),
                                ('credit.recovered', 'pending',
                                 a.granted_live > 0
                                 AND EXISTS (SELECT 1 FROM quota_alerts q
                                              WHERE q.org_id = a.org_id
                                                AND (a.org_id > 0 OR q.user_id = a.user_id)
                                                AND q.metric = a.metric AND q.period = a.period
                                                AND q.kind = a.kind AND q.alert = 'credit.depleted'
                                                AND q.grant_id < a.epoch
                                                AND NOT EXISTS (SELECT 1 FROM quota_alerts r
                                                                 WHERE r.org_id = q.org_id AND r.user_id = q.user_id
                                                                   AND r.metric = q.metric AND r.period = q.period
                                                                   AND r.kind = q.kind AND r.alert = 'credit.recovered'
                                                                   AND r.grant_id > q.grant_id))))
           AS x (alert, status, due)
     WHERE x.due
), recipients AS (
    SELECT c.*, c.user_id AS recipient, s.alerts_enabled AS wanted, s.alert_emails
      FROM called c
      JOIN usage_subjects s ON s.user_id = c.user_id AND s.org_id = 0
     WHERE c.org_id = 0
    UNION ALL
    SELECT c.*, r.id, s.alerts_enabled AND r.alerts_enabled, r.alert_emails
      FROM called c
      JOIN usage_subjects s ON s.user_id = 0 AND s.org_id = c.org_id
      JOIN organization_members m ON m.org_id = c.org_id AND m.role IN ('owner', 'admin')
      JOIN users r ON r.id = m.user_id
     WHERE c.org_id > 0 AND $3::bigint IS NULL
)
SELECT r.recipient, r.org_id, r.metric, r.period, r.kind, e.starts_at, r.expires_at,
       CASE WHEN r.alert = 'credit.low' THEN $2 ELSE 100 END::smallint,
       r.used, r.granted,
       CASE WHEN NOT r.wanted THEN 'suppressed'
            WHEN r.status = 'pending' AND r.alert_emails NOT IN ('all', 'credit') THEN 'unsubscribed'
            ELSE r.status END,
       r.alert, r.epoch
  FROM recipients r
  JOIN usage_grants e ON e.id = r.epoch
