-- The summary rows' owners — (user_id, org_id NULL) for personal rows, (user_id, org_id) for
-- a member's rows in an organization — whose local day $1 began before $3, the instant from
-- which usage_events holds every event ($3 NULL: nobody): retention deleted part of their
-- day, so the rebuild leaves their summary rows of that day as they are. The day is the
-- organization's for rows in one, the user's otherwise. $2 = one user id, or NULL for every
-- user. Candidates are the owners of summary rows on that day or of events near it; with $3
-- NULL the planner drops both scans.
CREATE TEMP TABLE rebuild_partial ON COMMIT DROP AS
WITH candidates AS (
    SELECT d.user_id, d.org_id
      FROM token_usage_daily d
     WHERE $3::timestamptz IS NOT NULL
       AND d.day = $1::date
       AND ($2::bigint IS NULL OR d.user_id = $2::bigint)
    UNION
    SELECT e.user_id, e.org_id
      FROM usage_events e
     WHERE $3::timestamptz IS NOT NULL
       AND e.created_at >= ($1::date - 1)::timestamp AT TIME ZONE 'UTC'
       AND e.created_at <  ($1::date + 2)::timestamp AT TIME ZONE 'UTC'
       AND ($2::bigint IS NULL OR e.user_id = $2::bigint)
), declared AS (
    SELECT c.user_id, c.org_id, COALESCE(o.timezone, u.timezone) AS timezone
      FROM candidates c
      LEFT JOIN users u ON c.org_id IS NULL AND u.id = c.user_id
      LEFT JOIN organizations o ON o.id = c.org_id
), zones AS (
    SELECT t.timezone, usage_timezone_or_utc(t.timezone) AS zone
      FROM (SELECT DISTINCT timezone FROM declared WHERE timezone IS NOT NULL) t
)
SELECT d.user_id, d.org_id
  FROM declared d
  LEFT JOIN zones z ON z.timezone = d.timezone
 WHERE $1::date::timestamp AT TIME ZONE COALESCE(z.zone, 'UTC') < $3::timestamptz
