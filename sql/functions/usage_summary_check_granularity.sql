-- usage_summary_check_granularity(granularity): refuses a granularity other than day, week,
-- month or year, naming it (SQLSTATE 22023).
CREATE OR REPLACE FUNCTION usage_summary_check_granularity(p_granularity text)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
AS $$
BEGIN
    IF p_granularity IS NULL OR p_granularity NOT IN ('day', 'week', 'month', 'year') THEN
        RAISE EXCEPTION 'unknown granularity "%"; expected day, week, month or year', p_granularity
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
END;
$$;
