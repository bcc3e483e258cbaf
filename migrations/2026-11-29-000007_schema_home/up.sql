-- The worker lives in a schema of its own (database.schema), and its daemon's role owns
-- nothing. Earlier migrations name their objects unqualified: they were created in this
-- schema because `--migrate` runs with search_path = the schema alone.

-- Partition DDL for a role that owns nothing. Only a table's owner may create or drop its
-- partitions, so these run as their owner (the role that ran this migration: the schema's
-- owner), with a fixed search_path, EXECUTE revoked from PUBLIC (deploy/roles.sql grants it to
-- the daemon's role). They accept only months of usage_events: the name is derived from the
-- month, never taken from the caller.

-- Creates the partition of the month starting on p_month (UTC), named usage_events_YYYY_MM,
-- unless it exists. Rows of that month waiting in the default partition move into it in the
-- same transaction (PostgreSQL refuses the new partition while the default one holds rows of
-- its range); their recorded_xid is kept, so aggregation is unaffected. Inserts wait for this
-- short transaction: one routed to the default partition and committed between the move and
-- CREATE TABLE would make PostgreSQL refuse the partition. The parent is locked before the
-- default partition, in the order an INSERT takes them, so the two cannot deadlock. Returns
-- whether it created the partition.
CREATE FUNCTION usage_create_partition(p_month date) RETURNS boolean
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

-- Detaches and drops the monthly partition p_partition when it ends at or before p_before
-- and holds no event the aggregation has not counted. The check runs under the locks the
-- drop needs (the parent first, as inserts take them, then the partition), so no event can
-- be committed into the partition between the check and the drop: one committed after the
-- caller's own probe is found here, and the partition is kept. Returns whether it dropped.
CREATE FUNCTION usage_drop_partition(p_partition text, p_before timestamptz) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    v_month     date;
    v_rel       regclass;
    v_bound     text;
    v_watermark xid8;
    v_pending   boolean;
BEGIN
    IF p_partition IS NULL OR p_partition !~ '^usage_events_[0-9]{4}_(0[1-9]|1[0-2])$' THEN
        RAISE EXCEPTION 'usage_drop_partition: "%" is not the name of a monthly partition of usage_events (usage_events_YYYY_MM)', p_partition
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_month := to_date(substr(p_partition, 14), 'YYYY_MM');
    SELECT c.oid::regclass, pg_get_expr(c.relpartbound, c.oid) INTO v_rel, v_bound
      FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = 'usage_events'::regclass AND c.relname = p_partition;
    IF v_rel IS NULL THEN
        RAISE EXCEPTION 'usage_drop_partition: % is not a partition of usage_events', p_partition
              USING ERRCODE = 'undefined_table';
    END IF;
    -- Both sides printed by this session, in its time zone and date style.
    IF v_bound <> format('FOR VALUES FROM (%L) TO (%L)',
                         v_month::timestamp AT TIME ZONE 'UTC',
                         (v_month + interval '1 month')::timestamp AT TIME ZONE 'UTC') THEN
        RAISE EXCEPTION 'usage_drop_partition: % has bounds % rather than its month''s', p_partition, v_bound
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_before IS NULL OR (v_month + interval '1 month')::timestamp AT TIME ZONE 'UTC' > p_before THEN
        RAISE EXCEPTION 'usage_drop_partition: % ends after %', p_partition, p_before
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    LOCK TABLE usage_events IN ACCESS EXCLUSIVE MODE;
    EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', v_rel);
    SELECT xid INTO v_watermark FROM aggregation_watermark;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s WHERE recorded_xid >= $1)', v_rel)
       INTO v_pending USING coalesce(v_watermark, '0'::xid8);
    IF v_pending THEN
        RETURN false;
    END IF;
    EXECUTE format('ALTER TABLE usage_events DETACH PARTITION %s', v_rel);
    EXECUTE format('DROP TABLE %s', v_rel);
    RETURN true;
END;
$$;

REVOKE EXECUTE ON FUNCTION usage_create_partition(date) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION usage_drop_partition(text, timestamptz) FROM PUBLIC;

-- Functions applications call, and the SECURITY DEFINER ones above, resolve their tables in
-- this schema whatever the caller's search_path (pg_temp last, so a caller's temporary table
-- cannot stand in for one of ours). The internal helpers run inside these or inside the
-- worker's sessions (whose search_path is this schema) and get no SET: it would stop the SQL
-- ones from being inlined into the aggregation's queries and cost every call a GUC change.
DO $$
DECLARE
    v_fn regprocedure;
BEGIN
    FOREACH v_fn IN ARRAY ARRAY[
        'usage_record(bigint, text, bigint, bigint, bigint, integer, bigint, numeric, text, text, jsonb, timestamptz)',
        'quota_status(bigint, timestamptz)',
        'usage_summary(bigint, text, date, date)',
        'usage_rebase_watermark(boolean)',
        'usage_create_partition(date)',
        'usage_drop_partition(text, timestamptz)'
    ]::regprocedure[] LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = %I, pg_temp', v_fn, current_schema());
    END LOOP;
END $$;
