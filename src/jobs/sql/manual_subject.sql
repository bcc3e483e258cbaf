-- A manual reset's subject ($1 user_id, $2 org_id: (user, 0) or (0, organization)): its zone
-- as stored, billing anchor day, plan, and whether PostgreSQL knows the zone. No row when
-- the subject is not in usage_subjects.
SELECT timezone, billing_anchor_day::int AS anchor, plan_id,
       usage_timezone_is_valid(timezone) AS known_zone
  FROM usage_subjects
 WHERE user_id = $1 AND org_id = $2
