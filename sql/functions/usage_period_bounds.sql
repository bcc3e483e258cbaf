-- usage_period_bounds(tz, anchor_day, period, at): the period (`day` or `month`) containing
-- instant `at` for a subject in zone `tz` (unknown: UTC) whose months start on anchor_day
-- (NULL: the 1st): from the local midnight of its first date to that of the next period's
-- (usage_period_dates, usage_local_midnight). Consecutive periods tile time; a clock change
-- straddling midnight puts `at` in the neighbouring period. The aggregation's period step
-- composes the same two parts set-based, once per zone, anchor and local day.
CREATE OR REPLACE FUNCTION usage_period_bounds(tz text, anchor_day integer, period text, at timestamptz, OUT period_start timestamptz, OUT period_end timestamptz)
RETURNS record
LANGUAGE plpgsql
STABLE
AS $$
DECLARE
    zone  text := CASE WHEN usage_timezone_is_valid(tz) THEN tz ELSE 'UTC' END;
    dates record;
BEGIN
    IF anchor_day IS NOT NULL AND anchor_day NOT BETWEEN 1 AND 31 THEN
        RAISE EXCEPTION 'billing anchor day % is out of range; expected 1..31 or NULL', anchor_day
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF at IS NULL THEN
        RETURN;
    END IF;
    dates := usage_period_dates((at AT TIME ZONE zone)::date, anchor_day, period);
    period_start := usage_local_midnight(dates.start_date, zone);
    period_end := usage_local_midnight(dates.end_date, zone);
    -- A clock change straddling midnight can put `at` outside the bounds of its local date:
    -- it then belongs to the neighbouring period.
    IF at < period_start THEN
        dates := usage_period_dates(dates.start_date - 1, anchor_day, period);
    ELSIF at >= period_end THEN
        dates := usage_period_dates(dates.end_date, anchor_day, period);
    ELSE
        RETURN;
    END IF;
    period_start := usage_local_midnight(dates.start_date, zone);
    period_end := usage_local_midnight(dates.end_date, zone);
END;
$$;
