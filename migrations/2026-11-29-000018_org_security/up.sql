-- The two functions the row-level security policies call run with a fixed search_path.
-- Without it they resolved names through the caller's: a reader could create a temporary
-- view `pg_roles` (pg_temp first in its search_path), make usage_is_reader() false, fall
-- under the policy for everyone else and read every organization's rows. pg_temp is named
-- last so that no temporary relation can stand in for a catalog.

CREATE OR REPLACE FUNCTION usage_current_org() RETURNS bigint
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT NULLIF(current_setting('usage.org_id', true), '')::bigint
$$;

-- to_regrole is NULL while usage_reader does not exist (before deploy/roles.sql), and
-- pg_has_role of NULL is NULL: no role is a reader then.
CREATE OR REPLACE FUNCTION usage_is_reader() RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(pg_has_role(current_user, to_regrole('usage_reader'), 'MEMBER'), false)
$$;
