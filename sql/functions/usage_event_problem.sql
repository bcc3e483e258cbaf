-- usage_event_problem(created_at, cost): why an event can never be counted, or NULL: a
-- created_at outside [1990, 2200) or a NaN cost. Amounts above the caps are still countable
-- (sums are checked separately). Keep in step with usage_events_created_at_in_range and
-- usage_events_cost_in_range. SQL and IMMUTABLE so the planner inlines it.
CREATE OR REPLACE FUNCTION usage_event_problem(created_at timestamptz, cost numeric)
RETURNS text
LANGUAGE sql
IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN NOT (created_at >= '1990-01-01 00:00:00+00'::timestamptz
                  AND created_at < '2200-01-01 00:00:00+00'::timestamptz)
            THEN 'created_at_out_of_range'
        WHEN cost = 'NaN'::numeric THEN 'cost_not_a_number'
    END
$$;
