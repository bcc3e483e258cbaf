-- usage_is_reader(): whether the current role reads under the organization policies, i.e. is
-- a member of usage_reader (made by deploy/roles.sql; no role is one while it does not
-- exist: to_regrole gives NULL). search_path pg_catalog, pg_temp: a reader's temporary view
-- named pg_roles cannot make it false.
CREATE OR REPLACE FUNCTION usage_is_reader()
RETURNS boolean
LANGUAGE sql
STABLE
SET search_path TO 'pg_catalog', 'pg_temp'
AS $$
    SELECT COALESCE(pg_has_role(current_user, to_regrole('usage_reader'), 'MEMBER'), false)
$$;
