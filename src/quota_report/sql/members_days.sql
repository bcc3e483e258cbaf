-- The local days of an organization's month period for its member report: the day of $1
-- (period_start) and the day before that of $2 (period_end), both in zone $3. No table.
SELECT ($1::timestamptz AT TIME ZONE $3)::date AS first_day,
       ($2::timestamptz AT TIME ZONE $3)::date - 1 AS last_day
