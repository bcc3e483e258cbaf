-- Partitions without policies of their own again, and usage_create_partition as in
-- 2026-11-29-000007_schema_home.
DO $$
DECLARE
    v_part regclass;
BEGIN
    FOR v_part IN SELECT i.inhrelid::regclass FROM pg_inherits i
                   WHERE i.inhparent = 'usage_events'::regclass LOOP
        EXECUTE format('DROP POLICY IF EXISTS usage_not_reader ON %s', v_part);
        EXECUTE format('DROP POLICY IF EXISTS usage_reader_own_org ON %s', v_part);
        EXECUTE format('ALTER TABLE %s DISABLE ROW LEVEL SECURITY', v_part);
    END LOOP;
END $$;
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
DROP FUNCTION usage_partition_policies(regclass);
