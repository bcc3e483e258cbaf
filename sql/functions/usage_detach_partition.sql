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
