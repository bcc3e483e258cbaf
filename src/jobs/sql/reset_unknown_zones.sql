-- reset-daily / reset-monthly, after step 1: the subjects (user_id, org_id) of the batch in
-- usage_closing whose zone is not a known time zone (their periods are computed in UTC).
-- Each distinct zone name is checked once, not once per subject (MATERIALIZED: inlined, the
-- planner moves the check onto every row). No binds.
WITH zones AS MATERIALIZED (SELECT DISTINCT zone FROM usage_closing WHERE zone IS NOT NULL),
     unknown AS MATERIALIZED (SELECT zone FROM zones WHERE NOT usage_timezone_is_valid(zone))
SELECT DISTINCT user_id, org_id FROM usage_closing
 WHERE zone IN (SELECT zone FROM unknown)
 ORDER BY 1, 2
