-- Row-level security on every partition of usage_events too. PostgreSQL applies the parent's
-- policies to queries through the parent only: a role granted SELECT on a partition itself
-- (say by GRANT SELECT ON ALL TABLES IN SCHEMA) would read it unfiltered. Each partition gets
-- the parent's two policies: the existing ones here, new ones as usage_create_partition
-- creates them.

-- Gives partition p_table the policies of usage_events (2026-11-29-000014_organizations).
-- Runs as the tables' owner: inside usage_create_partition and this migration.
CREATE FUNCTION usage_partition_policies(p_table regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', p_table);
    EXECUTE format('CREATE POLICY usage_not_reader ON %s
                        USING (NOT (SELECT usage_is_reader()))
                        WITH CHECK (NOT (SELECT usage_is_reader()))', p_table);
    EXECUTE format('CREATE POLICY usage_reader_own_org ON %s FOR SELECT
                        USING (org_id > 0 AND org_id = (SELECT usage_current_org()))', p_table);
END;
$$;
REVOKE EXECUTE ON FUNCTION usage_partition_policies(regclass) FROM PUBLIC;

SELECT usage_partition_policies(i.inhrelid::regclass)
  FROM pg_inherits i
 WHERE i.inhparent = 'usage_events'::regclass;

-- As in 2026-11-29-000007_schema_home, plus the policies of the new partition. CREATE OR
-- REPLACE keeps SECURITY DEFINER (part of the definition) and the EXECUTE grants, and drops
-- the pinned search_path, set again below.
CREATE OR REPLACE FUNCTION usage_create_partition(p_month date) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    v_name text;
    v_from timestamptz;
    v_to   timestamptz;
BEGIN
    IF p_month IS NULL OR p_month <> date_trunc('month', p_month)::date
       OR p_month < '1990-01-01' OR p_month >= '2200-01-01' THEN
        RAISE EXCEPTION 'usage_create_partition: % is not the first day of a month from 1990 to 2199', p_month
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_name := 'usage_events_' || to_char(p_month, 'YYYY_MM');
    v_from := p_month::timestamp AT TIME ZONE 'UTC';
    v_to := (p_month + interval '1 month')::timestamp AT TIME ZONE 'UTC';
    LOCK TABLE ONLY usage_events IN SHARE ROW EXCLUSIVE MODE;
    LOCK TABLE usage_events_default IN SHARE ROW EXCLUSIVE MODE;
    IF EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = 'usage_events'::regclass AND c.relname = v_name) THEN
        RETURN false;
    END IF;
    CREATE TEMP TABLE usage_events_moving ON COMMIT DROP AS
    WITH moved AS (
        DELETE FROM usage_events_default
         WHERE created_at >= v_from AND created_at < v_to
     RETURNING *)
    SELECT * FROM moved;
    EXECUTE format('CREATE TABLE %I PARTITION OF usage_events FOR VALUES FROM (%L) TO (%L)',
                   v_name, v_from, v_to);
    PERFORM usage_partition_policies(format('%I', v_name)::regclass);
    INSERT INTO usage_events SELECT * FROM pg_temp.usage_events_moving;
    DROP TABLE pg_temp.usage_events_moving;
    RETURN true;
END;
$$;

DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION usage_create_partition(date) SET search_path = %I, pg_temp',
                   current_schema());
END $$;
