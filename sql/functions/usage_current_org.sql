-- usage_current_org(): the organization a reading session belongs to, which the row-level
-- security policy usage_reader_own_org compares with: by default the session setting
-- usage.org_id (SET usage.org_id = '2', or set_config('usage.org_id', '2', true) per
-- transaction); NULL when unset. A Supabase project replaces the body to read it from the
-- JWT (docs/SCHEMA.md). search_path pg_catalog, pg_temp: no object of the caller's path can
-- stand in for a catalog.
CREATE OR REPLACE FUNCTION usage_current_org()
RETURNS bigint
LANGUAGE sql
STABLE
SET search_path TO 'pg_catalog', 'pg_temp'
AS $$
    SELECT NULLIF(current_setting('usage.org_id', true), '')::bigint
$$;
