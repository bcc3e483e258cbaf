-- Retention drops an old month in two transactions: usage_detach_partition() checks and
-- detaches it under a short exclusive lock of usage_events, usage_drop_detached_partition()
-- drops the detached table, whose commit (unlinking the month's files) no longer holds
-- usage_events. usage_drop_partition(), which did both under one lock, goes.
DROP FUNCTION usage_drop_partition(text, timestamptz);

-- ==== Written by scripts/sql-migration from sql/: the definitions this migration changes ====
SET LOCAL check_function_bodies = off;

-- usage_detach_partition(partition, before): detaches the monthly partition `partition`
-- (usage_events_YYYY_MM) from usage_events when it ends at or before `before` and holds no
-- event the aggregation has not counted; returns whether it detached it. The caller commits
-- at once, then drops the detached table with usage_drop_detached_partition().
-- - The check runs under the locks the detach needs (the parent first, as inserts take them,
--   then the partition), so no event can be committed into it between check and detach.
-- - The exclusive lock on usage_events lasts a catalog change and an index probe, whatever
--   the month's size: the drop, whose commit unlinks the month's files, no longer holds it.
-- - SECURITY DEFINER, EXECUTE revoked from PUBLIC, as usage_create_partition.
CREATE OR REPLACE FUNCTION usage_detach_partition(p_partition text, p_before timestamptz)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    v_month     date;
    v_rel       regclass;
    v_bound     text;
    v_watermark xid8;
    v_pending   boolean;
BEGIN
    IF p_partition IS NULL OR p_partition !~ '^usage_events_[0-9]{4}_(0[1-9]|1[0-2])$' THEN
        RAISE EXCEPTION 'usage_detach_partition: "%" is not the name of a monthly partition of usage_events (usage_events_YYYY_MM)', p_partition
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_month := to_date(substr(p_partition, 14), 'YYYY_MM');
    SELECT c.oid::regclass, pg_get_expr(c.relpartbound, c.oid) INTO v_rel, v_bound
      FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = 'usage_events'::regclass AND c.relname = p_partition;
    IF v_rel IS NULL THEN
        RAISE EXCEPTION 'usage_detach_partition: % is not a partition of usage_events', p_partition
              USING ERRCODE = 'undefined_table';
    END IF;
    -- Both sides printed by this session, in its time zone and date style.
    IF v_bound <> format('FOR VALUES FROM (%L) TO (%L)',
                         v_month::timestamp AT TIME ZONE 'UTC',
                         (v_month + interval '1 month')::timestamp AT TIME ZONE 'UTC') THEN
        RAISE EXCEPTION 'usage_detach_partition: % has bounds % rather than its month''s', p_partition, v_bound
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_before IS NULL OR (v_month + interval '1 month')::timestamp AT TIME ZONE 'UTC' > p_before THEN
        RAISE EXCEPTION 'usage_detach_partition: % ends after %', p_partition, p_before
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
    RETURN true;
END;
$$;
REVOKE EXECUTE ON FUNCTION usage_detach_partition(text, timestamptz) FROM PUBLIC;

-- usage_drop_detached_partition(partition): drops a monthly table of usage_events
-- (usage_events_YYYY_MM) that usage_detach_partition() detached: a table of that name in the
-- schema that is no longer a partition. Returns how many events it moved back into
-- usage_events first: those the aggregation has not counted (none, unless someone wrote into
-- the detached table by name), so that no uncounted event is ever dropped. NULL when there is
-- no such table (dropped already). Refuses a name that is still a partition.
-- - Its locks are on that table alone: usage_events is not locked while the month's files go.
-- - SECURITY DEFINER, EXECUTE revoked from PUBLIC, as usage_create_partition.
CREATE OR REPLACE FUNCTION usage_drop_detached_partition(p_partition text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $_$
DECLARE
    v_rel       regclass;
    v_attached  boolean;
    v_watermark xid8;
    v_moved     bigint;
    v_columns   text;
BEGIN
    IF p_partition IS NULL OR p_partition !~ '^usage_events_[0-9]{4}_(0[1-9]|1[0-2])$' THEN
        RAISE EXCEPTION 'usage_drop_detached_partition: "%" is not the name of a monthly table of usage_events (usage_events_YYYY_MM)', p_partition
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT c.oid::regclass, EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid)
      INTO v_rel, v_attached
      FROM pg_class c
     WHERE c.relnamespace = current_schema()::regnamespace AND c.relname = p_partition
       AND c.relkind = 'r';
    IF v_rel IS NULL THEN
        RETURN NULL;
    END IF;
    IF v_attached THEN
        RAISE EXCEPTION 'usage_drop_detached_partition: % is still a partition of usage_events; detach it with usage_detach_partition() first', p_partition
              USING ERRCODE = 'object_in_use';
    END IF;
    EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', v_rel);
    SELECT xid INTO v_watermark FROM aggregation_watermark;
    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO v_columns
      FROM pg_attribute a
     WHERE a.attrelid = 'usage_events'::regclass AND a.attnum > 0 AND NOT a.attisdropped;
    -- recorded_xid is copied as it is: aggregate still counts them, once. v_columns is made
    -- of quote_ident()ed names of the catalog, which plpgsql_check cannot see.
    PERFORM 'PRAGMA:DISABLE:SECURITY_WARNINGS';
    EXECUTE format('INSERT INTO usage_events (%s) SELECT %s FROM %s WHERE recorded_xid >= $1',
                   v_columns, v_columns, v_rel)
      USING coalesce(v_watermark, '0'::xid8);
    GET DIAGNOSTICS v_moved = ROW_COUNT;
    PERFORM 'PRAGMA:ENABLE:SECURITY_WARNINGS';
    EXECUTE format('DROP TABLE %s', v_rel);
    RETURN v_moved;
END;
$_$;
REVOKE EXECUTE ON FUNCTION usage_drop_detached_partition(text) FROM PUBLIC;
