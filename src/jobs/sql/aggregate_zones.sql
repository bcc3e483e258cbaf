-- The zone each subject of the batch is summarised in: a user's own zone for personal events
-- (user_id, org_id 0), the organization's for events in one (user_id 0, org_id).
-- usage_timezone_or_utc() runs once per distinct zone name, not per event. `unknown`: the
-- zone is not one PostgreSQL knows (reported and counted as UTC); `missing`: no users or
-- organizations row at all (counted as UTC). The batch joins it on its subject:
--   z.user_id = CASE WHEN b.org_id IS NULL THEN b.user_id ELSE 0 END
--   AND z.org_id = COALESCE(b.org_id, 0)
CREATE TEMP TABLE aggregate_zones ON COMMIT DROP AS
WITH subjects AS (
    SELECT DISTINCT CASE WHEN org_id IS NULL THEN user_id ELSE 0 END AS user_id,
                    COALESCE(org_id, 0) AS org_id
      FROM aggregate_batch
), declared AS (
    SELECT s.user_id, s.org_id,
           CASE WHEN s.org_id = 0 THEN u.id IS NULL ELSE o.id IS NULL END AS missing,
           COALESCE(o.timezone, u.timezone) AS timezone
      FROM subjects s
      LEFT JOIN users u ON s.org_id = 0 AND u.id = s.user_id
      LEFT JOIN organizations o ON s.org_id > 0 AND o.id = s.org_id
), zones AS (
    SELECT t.timezone, usage_timezone_or_utc(t.timezone) AS zone
      FROM (SELECT DISTINCT timezone FROM declared WHERE NOT missing) t
)
SELECT d.user_id,
       d.org_id,
       COALESCE(z.zone, 'UTC') AS zone,
       d.timezone AS declared_timezone,
       NOT d.missing AND z.zone IS DISTINCT FROM d.timezone AS unknown,
       d.missing
  FROM declared d
  LEFT JOIN zones z ON z.timezone = d.timezone
