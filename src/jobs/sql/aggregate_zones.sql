-- The zone each user of the batch is summarised in. usage_timezone_or_utc() runs once per
-- distinct zone name, not per event. `unknown`: the user's zone is not one PostgreSQL knows
-- (reported and counted as UTC); `missing`: no users row at all (counted as UTC).
CREATE TEMP TABLE aggregate_zones ON COMMIT DROP AS
WITH batch_users AS (
    SELECT DISTINCT user_id FROM aggregate_batch
), declared AS (
    SELECT b.user_id, u.id IS NULL AS missing, u.timezone
      FROM batch_users b
      LEFT JOIN users u ON u.id = b.user_id
), zones AS (
    SELECT t.timezone, usage_timezone_or_utc(t.timezone) AS zone
      FROM (SELECT DISTINCT timezone FROM declared WHERE NOT missing) t
)
SELECT d.user_id,
       COALESCE(z.zone, 'UTC') AS zone,
       d.timezone AS declared_timezone,
       NOT d.missing AND z.zone IS DISTINCT FROM d.timezone AS unknown,
       d.missing
  FROM declared d
  LEFT JOIN zones z ON z.timezone = d.timezone
