-- usage_timezone_or_utc(tz): the zone the books use for `tz`: tz itself when PostgreSQL knows
-- it, else 'UTC'. Called once per distinct zone of a batch, not per event (the exception
-- block costs a subtransaction).
CREATE OR REPLACE FUNCTION usage_timezone_or_utc(tz text)
RETURNS text
LANGUAGE plpgsql
STABLE
AS $$
BEGIN
    IF tz IS NULL OR tz = '' THEN
        RETURN 'UTC';
    END IF;
    PERFORM now() AT TIME ZONE tz;
    RETURN tz;
EXCEPTION WHEN invalid_parameter_value THEN
    RETURN 'UTC';
END;
$$;
