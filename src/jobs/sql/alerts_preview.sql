-- Dry run: the candidates not yet recorded, with the addressee, in a stable order.
-- $1 now; `candidates` is alerts_candidates.sql.
SELECT c.user_id, u.email, c.metric, c.period, c.kind, c.period_start, c.threshold,
       c.used_value, c.limit_value, c.status
  FROM candidates c
  JOIN users u ON u.id = c.user_id
 WHERE NOT EXISTS (SELECT 1 FROM quota_alerts a
                    WHERE a.user_id = c.user_id AND a.metric = c.metric AND a.period = c.period
                      AND a.kind = c.kind AND a.period_start = c.period_start
                      AND a.threshold = c.threshold)
 ORDER BY c.user_id, c.period, c.metric, c.kind, c.threshold
