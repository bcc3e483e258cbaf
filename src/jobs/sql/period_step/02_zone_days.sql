-- Period step 2, period_zone_days: the (zone, anchor, local day) whose natural periods the
-- batch needs. Every (zone, anchor) of a subject times every local day of the batch, unless
-- that makes more rows than the groups (a row for a day a subject has no events on costs
-- less than a pass over the groups); then those the groups hold. Reads aggregate_subjects,
-- aggregate_groups, period_day_list.
CREATE TEMP TABLE period_zone_days ON COMMIT DROP AS
WITH pairs AS MATERIALIZED (
    SELECT DISTINCT zone, anchor FROM aggregate_subjects
), sizes AS MATERIALIZED (
    SELECT (SELECT count(*) FROM pairs) * (SELECT count(*) FROM period_day_list) AS crossed,
           (SELECT COALESCE(sum(n), 0) FROM period_day_list) AS group_rows
)
SELECT p.zone, p.anchor, d.day
  FROM pairs p
 CROSS JOIN period_day_list d
 WHERE (SELECT crossed <= group_rows FROM sizes)
UNION ALL
SELECT DISTINCT s.zone, s.anchor, g.day
  FROM aggregate_groups g
  JOIN aggregate_subjects s ON s.user_id = g.subject_user_id AND s.org_id = g.subject_org_id
 WHERE (SELECT crossed > group_rows FROM sizes)
