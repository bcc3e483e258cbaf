-- Period step 1, period_day_list: the local days of the batch, with how many groups each
-- holds. Reads aggregate_groups.
CREATE TEMP TABLE period_day_list ON COMMIT DROP AS
SELECT day, count(*) AS n FROM aggregate_groups GROUP BY day
