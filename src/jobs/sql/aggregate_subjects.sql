-- aggregate_subjects: the subjects of the batch (usage_subjects: a user's personal usage,
-- (user_id, 0), or an organization's, (0, org_id)) with what their books are kept in: the
-- zone (`zone`, usage_timezone_or_utc(), run once per distinct zone name, not per event) and
-- the billing anchor day (`anchor`, 1 for calendar months).
-- Reads aggregate_batch (its subject_user_id, subject_org_id) and usage_subjects.
-- `declared_timezone` is the zone as stored; `unknown`: PostgreSQL does not know it (counted
-- as UTC, reported); `missing`: no users or organizations row at all (counted as UTC).
CREATE TEMP TABLE aggregate_subjects ON COMMIT DROP AS
WITH subjects AS (
    SELECT DISTINCT subject_user_id AS user_id, subject_org_id AS org_id FROM aggregate_batch
), declared AS (
    SELECT s.user_id, s.org_id, su.user_id IS NULL AS missing, su.timezone,
           COALESCE(su.billing_anchor_day, 1) AS anchor
      FROM subjects s
      LEFT JOIN usage_subjects su ON su.user_id = s.user_id AND su.org_id = s.org_id
), zones AS (
    SELECT t.timezone, usage_timezone_or_utc(t.timezone) AS zone
      FROM (SELECT DISTINCT timezone FROM declared WHERE NOT missing) t
)
SELECT d.user_id,
       d.org_id,
       COALESCE(z.zone, 'UTC') AS zone,
       d.anchor,
       d.timezone AS declared_timezone,
       NOT d.missing AND z.zone IS DISTINCT FROM d.timezone AS unknown,
       d.missing
  FROM declared d
  LEFT JOIN zones z ON z.timezone = d.timezone
