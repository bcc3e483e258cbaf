-- Moves the tables and functions of a release that created them in `public` into the
-- current schema (the first of search_path, the configured one). Only the objects that
-- release made, named one by one (functions with their argument types), so an application's
-- own objects in `public` — a users table, a quota_status() of its own — stay where they are.
-- Partitions of usage_events move with it; indexes, constraints and owned sequences follow
-- their tables. Objects the migrating role does not own but may act for (the old runbook
-- handed usage_events to the daemon's role) are taken back first: the daemon owns nothing.
-- No binds.
DO $$
DECLARE
    v_target text := current_schema();
    v_me     oid := (SELECT oid FROM pg_roles WHERE rolname = current_user);
    v_rels   regclass[];
    v_rel    regclass;
    v_fn     regprocedure;
    v_sig    text;
BEGIN
    SELECT array_agg(c.oid::regclass ORDER BY c.relname) INTO v_rels
      FROM pg_class c
     WHERE c.relnamespace = 'public'::regnamespace
       AND c.relkind IN ('r', 'p')
       AND (c.relname = ANY (ARRAY['plans', 'plan_limits', 'users', 'usage_events', 'prices',
                                   'job_runs', 'aggregation_watermark', 'token_usage_daily',
                                   'usage_periods', 'usage_period_kind_totals', 'quota_alerts',
                                   'usage_quarantine'])
            OR c.oid IN (SELECT inhrelid FROM pg_inherits
                          WHERE inhparent = 'public.usage_events'::regclass));
    FOREACH v_rel IN ARRAY coalesce(v_rels, '{}') LOOP
        IF (SELECT relowner FROM pg_class WHERE oid = v_rel) <> v_me THEN
            EXECUTE format('ALTER TABLE %s OWNER TO CURRENT_USER', v_rel);
        END IF;
        EXECUTE format('ALTER TABLE %s SET SCHEMA %I', v_rel, v_target);
    END LOOP;
    FOREACH v_sig IN ARRAY ARRAY[
        'usage_record(bigint, text, bigint, bigint, bigint, integer, bigint, numeric, text, text, jsonb, timestamptz)',
        'usage_timezone_or_utc(text)',
        'usage_summary(bigint, text, date, date)',
        'usage_timezone_is_valid(text)',
        'usage_local_midnight(date, text)',
        'usage_anchor_date(date, integer)',
        'usage_period_dates(date, integer, text)',
        'usage_period_bounds(text, integer, text, timestamptz)',
        'usage_periods_add_batch()',
        'quota_status(bigint, timestamptz)',
        'usage_event_problem(timestamptz, numeric)',
        'usage_rebase_watermark(boolean)'
    ] LOOP
        v_fn := to_regprocedure('public.' || v_sig);
        CONTINUE WHEN v_fn IS NULL;
        IF (SELECT proowner FROM pg_proc WHERE oid = v_fn) <> v_me THEN
            EXECUTE format('ALTER FUNCTION %s OWNER TO CURRENT_USER', v_fn);
        END IF;
        EXECUTE format('ALTER FUNCTION %s SET SCHEMA %I', v_fn, v_target);
    END LOOP;
END $$
