-- Back to the definitions of 2026-11-29-000014_organizations (CREATE OR REPLACE keeps the
-- functions' grants and the policies that call them; RESET drops the pinned search_path).
CREATE OR REPLACE FUNCTION usage_current_org() RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT NULLIF(current_setting('usage.org_id', true), '')::bigint
$$;
ALTER FUNCTION usage_current_org() RESET search_path;

CREATE OR REPLACE FUNCTION usage_is_reader() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'usage_reader')
                THEN pg_has_role(current_user, 'usage_reader', 'MEMBER')
                ELSE false END
$$;
ALTER FUNCTION usage_is_reader() RESET search_path;
