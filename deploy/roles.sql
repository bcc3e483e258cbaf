-- The database roles of usage-worker, with exactly the privileges each needs. Run by a
-- superuser with psql, in the application's database, before the first `--migrate` and again
-- after each (it is safe to run any number of times):
--
--   psql -d app -v schema=usage -f deploy/roles.sql
--
-- Variables (all optional): schema (default usage, as database.schema), owner (usage_owner),
-- worker (usage_worker), writer (usage_writer). The roles are created LOGIN without a
-- password: set one (ALTER ROLE usage_worker PASSWORD '…') or use certificate or peer
-- authentication.
--
--   owner   owns the schema and everything in it; runs `usage-worker --migrate`
--   worker  the daemon: reads and writes rows, creates and drops monthly partitions only
--           through usage_create_partition / usage_detach_partition /
--           usage_drop_detached_partition; owns nothing and may
--           create nothing in any schema
--   writer  applications: record events (INSERT on usage_events, usage_record()) and read
--           quota (quota_status(), usage_summary(), org_quota_status(), …)
--   reader  usage_reader, NOLOGIN, one per cluster whatever the other names: grant it to
--           the roles that read one organization's usage under row-level security
--           (GRANT usage_reader TO app_readonly). A member sees only the rows of the
--           organization usage_current_org() names (by default the session's
--           `SET usage.org_id = '2'`; none while unset or '0'), reads org_quota_status(),
--           org_usage_summary() and org_usage_by_member() through the same policies, and
--           writes nothing, even where a grant would allow it. Whoever may run SQL as it may
--           set usage.org_id to any organization: for clients that are not trusted with
--           that, usage_current_org() reads the organization from a signed JWT instead
--           (docs/SCHEMA.md, "Organizations and row-level security"). Never grant it to
--           the writer: the policies refuse a member of usage_reader every write to the
--           usage tables (usage_record() included) and every other organization's rows.

\set ON_ERROR_STOP on
\if :{?schema}
\else
\set schema usage
\endif
\if :{?owner}
\else
\set owner usage_owner
\endif
\if :{?worker}
\else
\set worker usage_worker
\endif
\if :{?writer}
\else
\set writer usage_writer
\endif

-- psql does not expand variables inside the DO block's body: hand them over as settings.
SET usage_roles.schema = :'schema';
SET usage_roles.owner = :'owner';
SET usage_roles.worker = :'worker';
SET usage_roles.writer = :'writer';

DO $$
DECLARE
    v_schema text := current_setting('usage_roles.schema');
    v_owner  text := current_setting('usage_roles.owner');
    v_worker text := current_setting('usage_roles.worker');
    v_writer text := current_setting('usage_roles.writer');
    v_role   text;
    v_fn     regprocedure;
BEGIN
    -- The rule database.schema follows.
    IF v_schema !~ '^[a-z_][a-z0-9_]{0,62}$' OR v_schema IN ('public', 'information_schema')
       OR v_schema LIKE 'pg\_%' THEN
        RAISE EXCEPTION 'schema "%" is not a plain schema name of the worker''s own (not public, pg_*, information_schema)', v_schema;
    END IF;
    FOREACH v_role IN ARRAY ARRAY[v_owner, v_worker, v_writer] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_role) THEN
            EXECUTE format('CREATE ROLE %I LOGIN', v_role);
        END IF;
    END LOOP;
    -- Roles are cluster-wide: the same file run at once for two databases may both find it
    -- missing, and the second CREATE then fails on the catalog's unique index.
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'usage_reader') THEN
        BEGIN
            CREATE ROLE usage_reader NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
    -- The daemon keeps every book: row-level security (which only usage_reader's policies
    -- narrow) is not applied to it at all.
    EXECUTE format('ALTER ROLE %I BYPASSRLS', v_worker);
    -- To name the session of a transaction that holds the aggregation watermark back (its
    -- state and how long it has been open; pg_stat_activity shows them to no one else).
    EXECUTE format('GRANT pg_read_all_stats TO %I', v_worker);
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I, %I, %I',
                   current_database(), v_owner, v_worker, v_writer);

    -- The owner creates in its own schema only: no CREATE on the database or on public.
    EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I AUTHORIZATION %I', v_schema, v_owner);
    EXECUTE format('ALTER SCHEMA %I OWNER TO %I', v_schema, v_owner);
    EXECUTE format('REVOKE ALL ON SCHEMA %I FROM PUBLIC', v_schema);
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I, %I, usage_reader', v_schema, v_worker, v_writer);

    -- The daemon: rows of every table, sequences, and the functions (among them the two
    -- partition functions, whose EXECUTE the migration revokes from PUBLIC). Default
    -- privileges cover what later migrations create; the GRANTs what exists already.
    EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA %I
                        GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO %I', v_owner, v_schema, v_worker);
    EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA %I
                        GRANT USAGE, SELECT ON SEQUENCES TO %I', v_owner, v_schema, v_worker);
    EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA %I
                        GRANT EXECUTE ON FUNCTIONS TO %I', v_owner, v_schema, v_worker);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO %I', v_schema, v_worker);
    EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO %I', v_schema, v_worker);
    EXECUTE format('GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA %I TO %I', v_schema, v_worker);

    -- Applications, once the tables exist (after the first --migrate): usage_record() and
    -- quota_status()/usage_summary() run with the caller's privileges, so the writer needs
    -- what they read: the events too, since the answers count those not yet aggregated.
    IF to_regclass(format('%I.usage_events', v_schema)) IS NOT NULL THEN
        EXECUTE format('GRANT INSERT, SELECT ON %I.usage_events TO %I', v_schema, v_writer);
        EXECUTE format('GRANT USAGE ON SEQUENCE %I.usage_events_id_seq TO %I', v_schema, v_writer);
        EXECUTE format('GRANT SELECT ON %I.prices, %I.users, %I.plan_limits, %I.usage_periods,
                                        %I.usage_period_kind_totals, %I.token_usage_daily TO %I',
                       v_schema, v_schema, v_schema, v_schema, v_schema, v_schema, v_writer);
        FOR v_fn IN SELECT p.oid::regprocedure FROM pg_proc p
                     WHERE p.pronamespace = v_schema::regnamespace
                       AND p.proname IN ('usage_record', 'usage_check', 'quota_status',
                                         'usage_summary', 'org_quota_status',
                                         'org_usage_summary', 'org_usage_by_member') LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', v_fn, v_writer);
        END LOOP;
        -- quota_status() and the org_* functions read a subject through this view, with the
        -- caller's rights (row-level security on users hides every user from a reader).
        IF to_regclass(format('%I.usage_subjects', v_schema)) IS NOT NULL THEN
            EXECUTE format('GRANT SELECT ON %I.usage_subjects TO %I, usage_reader',
                           v_schema, v_writer);
            EXECUTE format('GRANT SELECT ON %I.users TO usage_reader', v_schema);
        END IF;
        -- The answers add the events not yet aggregated: those at or above the watermark.
        EXECUTE format('GRANT SELECT ON %I.aggregation_watermark TO %I, usage_reader',
                       v_schema, v_writer);
        IF to_regclass(format('%I.organizations', v_schema)) IS NOT NULL THEN
            -- usage_record() checks membership and claims idempotency keys.
            EXECUTE format('GRANT SELECT ON %I.organizations, %I.organization_members,
                                            %I.usage_settings TO %I',
                           v_schema, v_schema, v_schema, v_writer);
            EXECUTE format('GRANT SELECT, INSERT, UPDATE ON %I.usage_idempotency_keys TO %I',
                           v_schema, v_writer);
            -- The reader: SELECT on the protected tables (row-level security narrows them to
            -- one organization) and what the org_* functions read.
            EXECUTE format('GRANT SELECT ON %I.usage_events, %I.token_usage_daily, %I.usage_periods,
                                            %I.usage_period_kind_totals, %I.quota_alerts,
                                            %I.organizations, %I.organization_members, %I.plans,
                                            %I.plan_limits TO usage_reader',
                           v_schema, v_schema, v_schema, v_schema, v_schema, v_schema, v_schema,
                           v_schema, v_schema);
            FOR v_fn IN SELECT p.oid::regprocedure FROM pg_proc p
                         WHERE p.pronamespace = v_schema::regnamespace
                           AND p.proname IN ('org_quota_status', 'org_usage_summary',
                                             'org_usage_by_member', 'usage_current_org',
                                             'usage_is_reader') LOOP
                EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO usage_reader', v_fn);
            END LOOP;
            -- The policies call these with the querying role's privileges: a database that
            -- revokes EXECUTE from PUBLIC by default must still let the writer through them.
            FOR v_fn IN SELECT p.oid::regprocedure FROM pg_proc p
                         WHERE p.pronamespace = v_schema::regnamespace
                           AND p.proname IN ('usage_current_org', 'usage_is_reader') LOOP
                EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', v_fn, v_writer);
            END LOOP;
        END IF;
        -- Credit grants: the application grants and voids them (usage_grant(),
        -- usage_void_grant()), and the answers read them; a reader sees its organization's.
        -- A grant is never deleted: no role but the owner may.
        IF to_regclass(format('%I.usage_grants', v_schema)) IS NOT NULL THEN
            EXECUTE format('GRANT SELECT, INSERT, UPDATE ON %I.usage_grants TO %I',
                           v_schema, v_writer);
            EXECUTE format('GRANT USAGE ON SEQUENCE %I.usage_grants_id_seq TO %I',
                           v_schema, v_writer);
            EXECUTE format('GRANT SELECT ON %I.usage_grant_marks, %I.usage_grant_draws TO %I',
                           v_schema, v_schema, v_writer);
            EXECUTE format('GRANT SELECT ON %I.usage_grants, %I.usage_grant_marks TO usage_reader',
                           v_schema, v_schema);
            EXECUTE format('REVOKE DELETE ON %I.usage_grants FROM %I, %I',
                           v_schema, v_worker, v_writer);
            FOR v_fn IN SELECT p.oid::regprocedure FROM pg_proc p
                         WHERE p.pronamespace = v_schema::regnamespace
                           AND p.proname IN ('usage_grant', 'usage_void_grant') LOOP
                EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', v_fn, v_writer);
            END LOOP;
        END IF;
        -- Notification preferences: the application's one-click unsubscribe endpoint and its
        -- "manage notifications" page (both SECURITY DEFINER: no privilege on users or on
        -- the signing keys, which no role but the owner and the daemon reads).
        FOR v_fn IN SELECT p.oid::regprocedure FROM pg_proc p
                     WHERE p.pronamespace = v_schema::regnamespace
                       AND p.proname IN ('usage_unsubscribe', 'usage_set_alert_emails') LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', v_fn, v_writer);
        END LOOP;
    ELSE
        RAISE NOTICE 'schema % has no tables yet: run usage-worker --migrate as %, then this file again to grant % its privileges',
              v_schema, v_owner, v_writer;
    END IF;
END $$;

RESET usage_roles.schema;
RESET usage_roles.owner;
RESET usage_roles.worker;
RESET usage_roles.writer;
