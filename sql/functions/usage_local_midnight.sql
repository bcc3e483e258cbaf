-- usage_local_midnight(d, tz): the first instant of local date `d` in zone `tz`. When local
-- midnight happens twice (a clock set back to 00:00), the earlier one; when it does not exist
-- (a clock set forward at 00:00), the instant of the change. PostgreSQL alone would pick the
-- later of two. With usage_period_dates, one of the two parts all period arithmetic is made
-- of: usage_period_bounds and the aggregation's period step compose them.
CREATE OR REPLACE FUNCTION usage_local_midnight(d date, tz text)
RETURNS timestamptz
LANGUAGE plpgsql
STABLE PARALLEL SAFE
AS $$
DECLARE
    later   timestamptz := d::timestamp AT TIME ZONE tz;
    day_before timestamptz := later - interval '1 day';
    earlier timestamptz := (d::timestamp - ((day_before AT TIME ZONE tz) - (day_before AT TIME ZONE 'UTC')))
                           AT TIME ZONE 'UTC';
BEGIN
    IF earlier < later AND (earlier AT TIME ZONE tz) = d::timestamp THEN
        RETURN earlier;
    END IF;
    RETURN later;
END;
$$;
