-- usage_create_partition(month): creates the partition of usage_events for the UTC month
-- starting on `month`, named usage_events_YYYY_MM, with the parent's row-level security
-- policies, unless it exists; returns whether it created it.
-- - Rows of that month waiting in the default partition move into it in the same transaction
--   (PostgreSQL refuses the new partition while the default one holds rows of its range);
--   their recorded_xid is kept, so aggregation is unaffected.
-- - The parent is locked before the default partition, in the order an INSERT takes them,
--   so the two cannot deadlock; inserts wait for this short transaction.
-- - SECURITY DEFINER, owned by the schema's owner, EXECUTE revoked from PUBLIC (granted to
--   the daemon's role by deploy/roles.sql): the daemon creates partitions without owning
--   anything. The name is derived from the month, never taken from the caller.
CREATE OR REPLACE FUNCTION usage_create_partition(p_month date)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
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
    -- For plpgsql_check, which cannot see a table this function creates: its shape.
    PERFORM 'PRAGMA:TABLE: usage_events_moving (LIKE usage_events)';
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
REVOKE EXECUTE ON FUNCTION usage_create_partition(date) FROM PUBLIC;
