-- The users whose local day $1 began before $3, the instant from which usage_events holds
-- every event ($3 NULL: nobody): retention deleted part of their day, so the rebuild leaves
-- their summary rows of that day as they are. $2 = one user id, or NULL for every user.
-- Candidates are the users with summary rows on that day or with events near it; with $3
-- NULL the planner drops both scans.
CREATE TEMP TABLE rebuild_partial ON COMMIT DROP AS
WITH candidates AS (
    SELECT d.user_id
      FROM token_usage_daily d
     WHERE $3::timestamptz IS NOT NULL
       AND d.day = $1::date
       AND ($2::bigint IS NULL OR d.user_id = $2::bigint)
    UNION
    SELECT e.user_id
      FROM usage_events e
     WHERE $3::timestamptz IS NOT NULL
       AND e.created_at >= ($1::date - 1)::timestamp AT TIME ZONE 'UTC'
       AND e.created_at <  ($1::date + 2)::timestamp AT TIME ZONE 'UTC'
       AND ($2::bigint IS NULL OR e.user_id = $2::bigint)
), zones AS (
    SELECT t.timezone, usage_timezone_or_utc(t.timezone) AS zone
      FROM (SELECT DISTINCT u.timezone FROM users u
             WHERE u.id IN (SELECT user_id FROM candidates)) t
)
SELECT c.user_id
  FROM candidates c
  LEFT JOIN users u ON u.id = c.user_id
  LEFT JOIN zones z ON z.timezone = u.timezone
 WHERE $1::date::timestamp AT TIME ZONE COALESCE(z.zone, 'UTC') < $3::timestamptz
