-- usage_rebase_watermark(force = false): recovery after a dump/restore into another cluster
-- (or any restart of transaction ids), when the stored watermark is ahead of the new
-- cluster's transaction ids and `aggregate` refuses to run. Precondition: no application has
-- written events since the restore. Events below the old watermark are renumbered to 0
-- (counted), the rest to this transaction's id, which becomes the watermark: the next
-- `aggregate` counts exactly what the old cluster had not.
-- - Refuses when events look written since the restore (their tuple's inserting transaction
--   is their recorded_xid); p_force skips that check.
-- - The NOT VALID bounds are dropped and re-added around the renumbering (old rows may break
--   them), so usage_events is locked against readers too until commit.
-- - Returns the number of events renumbered; 0 when the watermark is not ahead.
CREATE OR REPLACE FUNCTION usage_rebase_watermark(p_force boolean DEFAULT false)
RETURNS bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_old     xid8;
    v_current xid8 := pg_current_xact_id();
    v_new     bigint;
    v_counted bigint;
    v_pending bigint;
    v_bounds  record;
    v_saved   text[] := '{}'::text[];
BEGIN
    SELECT xid INTO v_old FROM aggregation_watermark FOR UPDATE;
    IF NOT FOUND OR v_old <= v_current THEN
        RETURN 0;
    END IF;
    -- Writers wait until the renumbering commits.
    LOCK TABLE usage_events IN EXCLUSIVE MODE;
    IF NOT p_force THEN
        SELECT count(*) INTO v_new
          FROM usage_events e
         WHERE e.recorded_xid < v_current
           AND e.xmin::text = (e.recorded_xid::text::numeric % 4294967296)::text;
        IF v_new > 0 THEN
            RAISE EXCEPTION 'usage_rebase_watermark: % event(s) below transaction id % look written since the restore; renumbering would take them for counted ones', v_new, v_current
                  USING ERRCODE = 'object_not_in_prerequisite_state',
                        HINT = 'Stop the writers, delete or re-insert those events after the rebase, or call usage_rebase_watermark(p_force => true) if they are restored rows.';
        END IF;
    END IF;
    FOR v_bounds IN SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
                     WHERE conrelid = 'usage_events'::regclass AND contype = 'c' AND NOT convalidated
    LOOP
        EXECUTE format('ALTER TABLE usage_events DROP CONSTRAINT %I', v_bounds.conname);
        v_saved := v_saved || format('ALTER TABLE usage_events ADD CONSTRAINT %I %s', v_bounds.conname, v_bounds.def);
    END LOOP;
    UPDATE usage_events SET recorded_xid = '0' WHERE recorded_xid < v_old AND recorded_xid <> '0';
    GET DIAGNOSTICS v_counted = ROW_COUNT;
    UPDATE usage_events SET recorded_xid = v_current WHERE recorded_xid >= v_old;
    GET DIAGNOSTICS v_pending = ROW_COUNT;
    FOR i IN 1 .. coalesce(array_length(v_saved, 1), 0) LOOP
        EXECUTE v_saved[i];
    END LOOP;
    UPDATE usage_quarantine SET recorded_xid = '0' WHERE recorded_xid < v_old;
    UPDATE usage_quarantine SET recorded_xid = v_current WHERE recorded_xid >= v_old;
    UPDATE aggregation_watermark SET xid = v_current, updated_at = clock_timestamp();
    RAISE NOTICE 'usage_rebase_watermark: watermark % -> %; % counted event(s) renumbered to 0, % not yet counted to %',
          v_old, v_current, v_counted, v_pending, v_current;
    RETURN v_counted + v_pending;
END;
$$;
