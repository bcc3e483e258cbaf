DO $$
DECLARE
    v_fn regprocedure;
BEGIN
    FOREACH v_fn IN ARRAY ARRAY[
        'usage_record(bigint, text, bigint, bigint, bigint, integer, bigint, numeric, text, text, jsonb, timestamptz)',
        'quota_status(bigint, timestamptz)',
        'usage_summary(bigint, text, date, date)',
        'usage_rebase_watermark(boolean)'
    ]::regprocedure[] LOOP
        EXECUTE format('ALTER FUNCTION %s RESET search_path', v_fn);
    END LOOP;
END $$;
DROP FUNCTION usage_drop_partition(text, timestamptz);
DROP FUNCTION usage_create_partition(date);
