-- Records the alerts the candidates call for. The UNIQUE key (recipient, organization or 0,
-- metric, period kind, event kind, period start, threshold, alert, grant) with ON CONFLICT DO
-- NOTHING makes this idempotent: a threshold is decided once per period and recipient, however
-- often the job runs. A new period has a new period_start, so every threshold is armed again;
-- a credit alert is decided once per newest active grant (grant_id), a forecast once per
-- period (threshold 100, alert `quota.forecast`).
-- $1 now; reads alert_candidates (alerts_candidates.sql).
WITH inserted AS (
    INSERT INTO quota_alerts (user_id, org_id, metric, period, kind, period_start, period_end,
                              threshold, used_value, limit_value, status, next_attempt_at,
                              decided_at, alert, grant_id, projected_exhaustion)
    SELECT user_id, org_id, metric, period, kind, period_start, period_end, threshold,
           used_value, limit_value, status, $1, $1, alert, grant_id, projected_exhaustion
      FROM alert_candidates
    ON CONFLICT ON CONSTRAINT quota_alerts_once DO NOTHING
    RETURNING status
)
SELECT status, count(*) AS n FROM inserted GROUP BY status
