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
