-- Claims a batch of due alerts: pending ones whose next attempt is due, and `sending` ones
-- whose lease ran out (their run crashed between claim and result). SKIP LOCKED lets
-- several senders share the outbox; the lease keeps a row from being sent twice while its
-- claim is alive. Each claim counts as an attempt.
-- $1 now, $2 alerts.lease in seconds, $3 batch size, $4 one user id (personal alerts only)
-- or NULL for everyone.
-- Returns the zone the period was counted in (the organization's for its alerts) and its UTC
-- offset at the period's end, so the email shows the reset on the clock the period was
-- computed on, whatever spelling of the zone PostgreSQL accepted (and the offset at the
-- projected exhaustion, for the same reason); and, for an organization's
-- alert, its name and the recipient's role.
WITH due AS (
    SELECT id, user_id, org_id
      FROM quota_alerts
     WHERE ((status = 'pending' AND next_attempt_at <= $1)
            OR (status = 'sending' AND leased_until <= $1))
       AND ($4::bigint IS NULL OR (user_id = $4 AND org_id = 0))
     ORDER BY next_attempt_at, id
     LIMIT $3
       FOR UPDATE SKIP LOCKED
)
UPDATE quota_alerts a
   SET status = 'sending',
       leased_until = $1 + make_interval(secs => $2),
       attempts = a.attempts + 1,
       updated_at = now()
  FROM due
  JOIN users u ON u.id = due.user_id
  LEFT JOIN organizations o ON o.id = due.org_id
  LEFT JOIN organization_members m ON m.org_id = due.org_id AND m.user_id = due.user_id
 CROSS JOIN LATERAL (SELECT usage_timezone_or_utc(COALESCE(o.timezone, u.timezone)) AS zone) z
 WHERE a.id = due.id
RETURNING a.id, a.user_id, a.org_id, a.metric, a.period, a.kind, a.period_start, a.period_end,
          a.threshold, a.used_value, a.limit_value, a.attempts, u.email, u.name,
          COALESCE(o.name, '') AS org_name, COALESCE(m.role, '') AS role, z.zone,
          EXTRACT(EPOCH FROM (a.period_end AT TIME ZONE z.zone)
                             - (a.period_end AT TIME ZONE 'UTC'))::int AS period_end_utc_offset,
          a.alert, a.grant_id, a.projected_exhaustion,
          COALESCE(EXTRACT(EPOCH FROM (a.projected_exhaustion AT TIME ZONE z.zone)
                                      - (a.projected_exhaustion AT TIME ZONE 'UTC'))::int, 0)
              AS projected_utc_offset
