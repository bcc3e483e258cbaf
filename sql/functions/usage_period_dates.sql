-- usage_period_dates(d, anchor_day, period): the local dates on which the period (`day` or
-- `month`) containing local date `d` starts and ends. A month starts on day anchor_day
-- (NULL: the 1st), clamped to the month's last day (31 -> Feb 28/29, Apr 30). With
-- usage_local_midnight, one of the two parts all period arithmetic is made of.
CREATE OR REPLACE FUNCTION usage_period_dates(d date, anchor_day integer, period text, OUT start_date date, OUT end_date date)
RETURNS record
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    a    int := COALESCE(anchor_day, 1);
    m    date := date_trunc('month', d)::date;
    next date;
BEGIN
    IF period = 'day' THEN
        start_date := d;
        end_date := d + 1;
    ELSIF period = 'month' THEN
        -- (m + 1 month) - m is the month's length in days.
        start_date := m + (LEAST(a, (m + interval '1 month')::date - m) - 1);
        IF start_date > d THEN
            m := (m - interval '1 month')::date;
            start_date := m + (LEAST(a, (m + interval '1 month')::date - m) - 1);
        END IF;
        next := (m + interval '1 month')::date;
        end_date := next + (LEAST(a, (next + interval '1 month')::date - next) - 1);
    ELSE
        RAISE EXCEPTION 'unknown period "%"; expected day or month', period
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
END;
$$;
