-- usage_timezone_is_valid(tz): whether PostgreSQL knows the time zone name. An unknown name
-- must not make period arithmetic fail for every subject: callers count it as UTC and report
-- it. PARALLEL UNSAFE: the exception block is a subtransaction.
CREATE OR REPLACE FUNCTION usage_timezone_is_valid(tz text)
RETURNS boolean
LANGUAGE plpgsql
STABLE
AS $$
BEGIN
    IF tz IS NULL OR tz = '' THEN
        RETURN false;
    END IF;
    IF tz = 'UTC' THEN
        RETURN true;
    END IF;
    PERFORM now() AT TIME ZONE tz;
    RETURN true;
EXCEPTION WHEN invalid_parameter_value THEN
    RETURN false;
END;
$$;
