-- The grants of a quota report: the subject's ($1 user_id, $2 org_id) grants still usable at
-- or after $3 (active or starting later; not expired, not voided), earliest expiry first, as
-- they are drawn, with what each has given: usage_grant_ledger() over every event the
-- snapshot sees, as quota_status() counts them. $4 the zone of the report: each instant's
-- offset from UTC there, in seconds east.
WITH keys AS (
    SELECT DISTINCT g.metric, g.period, g.kind FROM usage_grants g
     WHERE g.user_id = $1 AND g.org_id = $2
), drawn AS (
    SELECT l.grant_id, sum(l.drawn) AS drawn
      FROM keys k
     CROSS JOIN LATERAL usage_grant_ledger($1, $2, k.metric, k.period, k.kind, 'infinity', true) l
     GROUP BY l.grant_id
)
SELECT g.id, g.metric, g.period, g.kind, g.amount, COALESCE(d.drawn, 0) AS drawn,
       g.starts_at, g.expires_at, g.reason,
       EXTRACT(EPOCH FROM (g.starts_at AT TIME ZONE $4) - (g.starts_at AT TIME ZONE 'UTC'))::int
           AS starts_at_utc_offset,
       EXTRACT(EPOCH FROM (g.expires_at AT TIME ZONE $4) - (g.expires_at AT TIME ZONE 'UTC'))::int
           AS expires_at_utc_offset
  FROM usage_grants g
  LEFT JOIN drawn d ON d.grant_id = g.id
 WHERE g.user_id = $1 AND g.org_id = $2
   AND LEAST(g.expires_at, COALESCE(g.voided_at, 'infinity')) > $3
 ORDER BY g.expires_at, g.id
