-- ==== Written by scripts/sql-migration: the definitions as they were before ====
SET LOCAL check_function_bodies = off;

CREATE OR REPLACE FUNCTION usage_drop_partition(p_partition text, p_before timestamp with time zone)
 RETURNS boolean
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path FROM CURRENT
AS $function$
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
$function$;
REVOKE ALL ON FUNCTION usage_drop_partition(text,timestamp with time zone) FROM PUBLIC;

DROP FUNCTION usage_detach_partition(text,timestamp with time zone);

DROP FUNCTION usage_drop_detached_partition(text);
-- ==== End of the written part ====
