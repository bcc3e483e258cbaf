-- The schema the migrations build (schema usage), as pg_dump --schema-only --no-owner prints it. Written by `UW_UPDATE_STRUCTURE=1 cargo test --test it definitions::` (or scripts/sql-migration); never edited by hand.
--
-- PostgreSQL database dump
--



SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: usage; Type: SCHEMA; Schema: -; Owner: -
--

CREATE SCHEMA usage;


--
-- Name: org_quota_status(bigint, timestamp with time zone); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.org_quota_status(p_org_id bigint, p_at timestamp with time zone DEFAULT now()) RETURNS TABLE(metric text, period text, kind text, used numeric, limit_value numeric, remaining numeric, unlimited boolean, exceeded boolean, percent numeric, period_start timestamp with time zone, period_end timestamp with time zone, enforcement text, granted numeric, grant_remaining numeric, projected_exhaustion timestamp with time zone)
    LANGUAGE plpgsql STABLE
    SET search_path TO 'usage', 'pg_temp'
    AS $$
BEGIN
    -- Organization ids are positive: (0, 0) would be user 0's personal usage.
    IF p_org_id > 0 THEN
        RETURN QUERY SELECT * FROM usage_subject_status(0, p_org_id, p_at);
    END IF;
END;
$$;


--
-- Name: org_usage_by_member(bigint, date, date); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.org_usage_by_member(p_org_id bigint, p_from date, p_to date) RETURNS TABLE(user_id bigint, events bigint, tokens bigint, prompt_tokens bigint, completion_tokens bigint, messages bigint, bytes bigint, cost numeric)
    LANGUAGE sql STABLE
    SET search_path TO 'usage', 'pg_temp'
    AS $$
    SELECT d.user_id, sum(d.events)::bigint, sum(d.tokens)::bigint, sum(d.prompt_tokens)::bigint,
           sum(d.completion_tokens)::bigint, sum(d.messages)::bigint, sum(d.bytes)::bigint,
           sum(d.cost)
      FROM usage_subject_days(0, p_org_id, p_from, p_to) d
     WHERE p_org_id > 0  -- (0, 0) would be user 0's personal usage
     GROUP BY d.user_id
     ORDER BY sum(d.tokens) DESC, d.user_id;
$$;


--
-- Name: org_usage_summary(bigint, text, date, date); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.org_usage_summary(p_org_id bigint, p_granularity text, p_from date, p_to date) RETURNS TABLE(period_start date, events bigint, tokens bigint, prompt_tokens bigint, completion_tokens bigint, messages bigint, bytes bigint, cost numeric)
    LANGUAGE sql STABLE
    SET search_path TO 'usage', 'pg_temp'
    AS $$
    -- Organization ids are positive: (0, 0) would be user 0's personal usage.
    SELECT * FROM usage_subject_summary(0, p_org_id, p_granularity, p_from, p_to)
     WHERE p_org_id > 0
$$;


--
-- Name: quota_status(bigint, timestamp with time zone); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.quota_status(p_user_id bigint, p_at timestamp with time zone DEFAULT now()) RETURNS TABLE(metric text, period text, kind text, used numeric, limit_value numeric, remaining numeric, unlimited boolean, exceeded boolean, percent numeric, period_start timestamp with time zone, period_end timestamp with time zone, enforcement text, granted numeric, grant_remaining numeric, projected_exhaustion timestamp with time zone)
    LANGUAGE plpgsql STABLE
    SET search_path TO 'usage', 'pg_temp'
    AS $$
BEGIN
    RETURN QUERY SELECT * FROM usage_subject_status(p_user_id, 0, p_at);
END;
$$;


--
-- Name: usage_check(bigint, text, bigint, bigint, bigint, integer, bigint, numeric, text, text, jsonb, timestamp with time zone, bigint, text); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_check(p_user_id bigint, p_kind text, p_tokens bigint DEFAULT 0, p_prompt_tokens bigint DEFAULT 0, p_completion_tokens bigint DEFAULT 0, p_messages integer DEFAULT 0, p_bytes bigint DEFAULT 0, p_cost numeric DEFAULT NULL::numeric, p_request_type text DEFAULT ''::text, p_model text DEFAULT ''::text, p_metadata jsonb DEFAULT '{}'::jsonb, p_created_at timestamp with time zone DEFAULT now(), p_org_id bigint DEFAULT NULL::bigint, p_idempotency_key text DEFAULT NULL::text) RETURNS TABLE(fits boolean, metric text, period text, kind text, enforcement text, limit_value numeric, used numeric, remaining numeric, resets_at timestamp with time zone)
    LANGUAGE sql STABLE
    SET search_path TO 'usage', 'pg_temp'
    AS $$
    SELECT * FROM usage_check_event(p_user_id, p_kind, p_tokens, p_prompt_tokens,
                                    p_completion_tokens, p_messages, p_bytes, p_cost,
                                    p_request_type, p_model, p_metadata, p_created_at, p_org_id)
$$;


--
-- Name: usage_check_event(bigint, text, bigint, bigint, bigint, integer, bigint, numeric, text, text, jsonb, timestamp with time zone, bigint); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_check_event(p_user_id bigint, p_kind text, p_tokens bigint, p_prompt_tokens bigint, p_completion_tokens bigint, p_messages integer, p_bytes bigint, p_cost numeric, p_request_type text, p_model text, p_metadata jsonb, p_created_at timestamp with time zone, p_org_id bigint) RETURNS TABLE(fits boolean, metric text, period text, kind text, enforcement text, limit_value numeric, used numeric, remaining numeric, resets_at timestamp with time zone)
    LANGUAGE plpgsql STABLE
    AS $$
DECLARE
    a record;
    s record;
    c record;
BEGIN
    SELECT x.* INTO a
      FROM usage_event_amounts(p_kind, p_tokens, p_prompt_tokens, p_completion_tokens, p_bytes,
                               p_cost, p_model, p_created_at) x;
    -- In usage_record()'s order: membership, then what the table's constraints refuse.
    PERFORM usage_member_check(p_user_id, p_org_id);
    PERFORM usage_event_check(p_kind, COALESCE(p_request_type, ''), COALESCE(p_model, ''),
                              COALESCE(p_metadata, '{}'), p_created_at, a.tokens,
                              COALESCE(p_prompt_tokens, 0), COALESCE(p_completion_tokens, 0),
                              COALESCE(p_messages, 0), COALESCE(p_bytes, 0), a.cost, p_org_id);
    SELECT x.* INTO s FROM usage_event_subject(p_user_id, p_org_id) x;
    SELECT l.* INTO c
      FROM usage_limit_checks(s.user_id, s.org_id, p_kind, p_created_at,
                              COALESCE(p_messages, 0), a.tokens, COALESCE(p_bytes, 0), a.cost) l
     ORDER BY l.fits, l.enforcement = 'hard' DESC,
              (l.limit_value + l.balance - l.used - l.amount) / NULLIF(l.limit_value + l.balance, 0) NULLS FIRST,
              l.period, l.metric, l.kind
     LIMIT 1;
    IF NOT FOUND THEN
        RETURN QUERY SELECT true, NULL::text, NULL::text, NULL::text, NULL::text,
                            NULL::numeric, NULL::numeric, NULL::numeric, NULL::timestamptz;
        RETURN;
    END IF;
    RETURN QUERY SELECT c.fits, c.metric, c.period, c.kind, c.enforcement, c.limit_value, c.used,
                        GREATEST(c.limit_value - c.used, 0) + c.balance, c.period_end;
END;
$$;


--
-- Name: usage_create_partition(date); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_create_partition(p_month date) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'usage', 'pg_temp'
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


--
-- Name: usage_current_org(); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_current_org() RETURNS bigint
    LANGUAGE sql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
    SELECT NULLIF(current_setting('usage.org_id', true), '')::bigint
$$;


--
-- Name: usage_detach_partition(text, timestamp with time zone); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_detach_partition(p_partition text, p_before timestamp with time zone) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'usage', 'pg_temp'
    AS $_$
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
$_$;


--
-- Name: usage_drop_detached_partition(text); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_drop_detached_partition(p_partition text) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'usage', 'pg_temp'
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


--
-- Name: usage_enforce_hard_limits(bigint, bigint, text, timestamp with time zone, numeric, numeric, numeric, numeric); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_enforce_hard_limits(p_user_id bigint, p_org_id bigint, p_kind text, p_at timestamp with time zone, p_messages numeric, p_tokens numeric, p_bytes numeric, p_cost numeric) RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    r       record;
    v_who   text := CASE WHEN p_org_id > 0 THEN 'organization ' || p_org_id ELSE 'user ' || p_user_id END;
    v_zone  text;
BEGIN
    IF current_setting('transaction_isolation') = 'repeatable read' THEN
        RAISE EXCEPTION 'usage_record: the hard limits of % cannot be enforced in a REPEATABLE READ transaction, whose snapshot does not see the events recorded since it began', v_who
              USING ERRCODE = 'UQ002',
                    HINT = 'call usage_record() in a READ COMMITTED (the default) or SERIALIZABLE transaction';
    END IF;
    PERFORM pg_advisory_xact_lock(21841, hashtext(p_user_id::text || ':' || p_org_id::text));
    SELECT c.* INTO r
      FROM usage_limit_checks(p_user_id, p_org_id, p_kind, p_at, p_messages, p_tokens, p_bytes, p_cost) c
     WHERE c.enforcement = 'hard' AND NOT c.fits
     ORDER BY c.period, c.metric, c.kind
     LIMIT 1;
    IF FOUND THEN
        SELECT usage_timezone_or_utc(s.timezone) INTO v_zone
          FROM usage_subjects s WHERE s.user_id = p_user_id AND s.org_id = p_org_id;
        RAISE EXCEPTION 'usage_record: hard limit reached for %: % per % (%) is %, % used, % left in grants, this event adds %; it resets at % %',
              v_who, r.metric, r.period, CASE WHEN r.kind = '' THEN 'all kinds' ELSE 'kind ' || r.kind END,
              r.limit_value, r.used, r.balance, r.amount,
              to_char(r.period_end AT TIME ZONE COALESCE(v_zone, 'UTC'), 'YYYY-MM-DD HH24:MI:SS'),
              COALESCE(v_zone, 'UTC')
              USING ERRCODE = 'UQ001',
                    DETAIL = format('metric=%s period=%s kind=%s limit=%s used=%s grant_remaining=%s amount=%s resets_at=%s',
                                    r.metric, r.period, r.kind, r.limit_value, r.used, r.balance, r.amount,
                                    to_char(r.period_end AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')),
                    HINT = 'nothing was recorded; the limit is plan_limits.enforcement = ''hard''';
    END IF;
END;
$$;


--
-- Name: usage_event_amounts(text, bigint, bigint, bigint, bigint, numeric, text, timestamp with time zone); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_event_amounts(p_kind text, p_tokens bigint, p_prompt_tokens bigint, p_completion_tokens bigint, p_bytes bigint, p_cost numeric, p_model text, p_at timestamp with time zone) RETURNS TABLE(tokens bigint, cost numeric)
    LANGUAGE sql STABLE
    AS $$
    SELECT t.tokens,
           -- Within numeric(20, 8) but past the bounds, so usage_events_cost_in_range (or
           -- _not_negative) refuses it; NaN stays NaN, which the bound refuses as well.
           COALESCE(CASE WHEN COALESCE(p_cost, p.cost) <> 'NaN'::numeric
                         THEN GREATEST(LEAST(COALESCE(p_cost, p.cost), 100000000000), -1)
                         ELSE COALESCE(p_cost, p.cost) END, 0)
      FROM (SELECT LEAST(GREATEST(COALESCE(p_tokens, 0)::numeric,
                                  COALESCE(p_prompt_tokens, 0)::numeric
                                  + COALESCE(p_completion_tokens, 0)::numeric),
                         9223372036854775807)::bigint AS tokens) t
      -- The price in force at p_at: the model's row, else the kind's; looked up only without
      -- p_cost. A join, not a scalar subquery, so it is looked up once per call.
      LEFT JOIN LATERAL (
            SELECT p.per_event
                 + COALESCE(p_prompt_tokens, 0) * p.per_1k_prompt_tokens / 1000
                 + COALESCE(p_completion_tokens, 0) * p.per_1k_completion_tokens / 1000
                 + GREATEST(t.tokens - COALESCE(p_prompt_tokens, 0)::numeric
                            - COALESCE(p_completion_tokens, 0)::numeric, 0)
                   * p.per_1k_tokens / 1000
                 + COALESCE(p_bytes, 0) * p.per_mb / 1048576 AS cost
              FROM prices p
             WHERE p.kind = p_kind
               AND p.model IN (COALESCE(p_model, ''), '')
               AND p.valid_from <= p_at
             ORDER BY (p.model = '') ASC, p.valid_from DESC
             LIMIT 1) p ON p_cost IS NULL
$$;


--
-- Name: usage_event_check(text, text, text, jsonb, timestamp with time zone, bigint, bigint, bigint, integer, bigint, numeric, bigint); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_event_check(p_kind text, p_request_type text, p_model text, p_metadata jsonb, p_created_at timestamp with time zone, p_tokens bigint, p_prompt_tokens bigint, p_completion_tokens bigint, p_messages integer, p_bytes bigint, p_cost numeric, p_org_id bigint) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    AS $_$
DECLARE
    v_failed text;
BEGIN
    IF p_kind IS NULL THEN
        RAISE EXCEPTION 'null value in column "kind" of relation "usage_events" violates not-null constraint'
              USING ERRCODE = 'not_null_violation', COLUMN = 'kind', TABLE = 'usage_events';
    END IF;
    v_failed := CASE
        WHEN NOT (p_bytes <= 1000000000000) THEN 'usage_events_bytes_in_range'
        WHEN NOT (p_bytes >= 0) THEN 'usage_events_bytes_not_negative'
        WHEN NOT (p_completion_tokens <= 1000000000000) THEN 'usage_events_completion_tokens_in_range'
        WHEN NOT (p_completion_tokens >= 0) THEN 'usage_events_completion_tokens_not_negative'
        WHEN NOT (p_cost <= 1000000000) THEN 'usage_events_cost_in_range'
        WHEN NOT (p_cost >= 0) THEN 'usage_events_cost_not_negative'
        WHEN NOT (p_created_at >= '1990-01-01 00:00:00+00'::timestamptz
                  AND p_created_at < '2200-01-01 00:00:00+00'::timestamptz)
            THEN 'usage_events_created_at_in_range'
        WHEN NOT (p_kind ~ '^[a-z][a-z0-9_]{0,63}$') THEN 'usage_events_kind_check'
        WHEN NOT (p_messages <= 1000000) THEN 'usage_events_messages_in_range'
        WHEN NOT (p_messages >= 0) THEN 'usage_events_messages_not_negative'
        WHEN NOT (octet_length(p_metadata::text) <= 65536) THEN 'usage_events_metadata_size'
        WHEN NOT (length(p_model) <= 200) THEN 'usage_events_model_check'
        WHEN NOT (p_org_id > 0) THEN 'usage_events_org_id_check'
        WHEN NOT (p_prompt_tokens <= 1000000000000) THEN 'usage_events_prompt_tokens_in_range'
        WHEN NOT (p_prompt_tokens >= 0) THEN 'usage_events_prompt_tokens_not_negative'
        WHEN NOT (p_request_type ~ '^([a-z0-9][a-z0-9_.-]{0,63})?$') THEN 'usage_events_request_type_check'
        WHEN NOT (p_tokens <= 1000000000000) THEN 'usage_events_tokens_in_range'
        WHEN NOT (p_tokens >= 0) THEN 'usage_events_tokens_not_negative'
    END;
    IF v_failed IS NOT NULL THEN
        RAISE EXCEPTION 'new row for relation "usage_events" violates check constraint "%"', v_failed
              USING ERRCODE = 'check_violation', CONSTRAINT = v_failed, TABLE = 'usage_events';
    END IF;
END;
$_$;


--
-- Name: usage_event_problem(timestamp with time zone, numeric); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_event_problem(created_at timestamp with time zone, cost numeric) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT CASE
        WHEN NOT (created_at >= '1990-01-01 00:00:00+00'::timestamptz
                  AND created_at < '2200-01-01 00:00:00+00'::timestamptz)
            THEN 'created_at_out_of_range'
        WHEN cost = 'NaN'::numeric THEN 'cost_not_a_number'
    END
$$;


--
-- Name: usage_event_subject(bigint, bigint); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_event_subject(p_user_id bigint, p_org_id bigint) RETURNS TABLE(user_id bigint, org_id bigint)
    LANGUAGE sql IMMUTABLE ROWS 1 PARALLEL SAFE
    AS $$
    SELECT CASE WHEN p_org_id IS NULL THEN p_user_id ELSE 0 END, COALESCE(p_org_id, 0)
$$;


--
-- Name: usage_grant(bigint, bigint, text, numeric, text, timestamp with time zone, timestamp with time zone, text, text); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_grant(p_user_id bigint DEFAULT NULL::bigint, p_org_id bigint DEFAULT NULL::bigint, p_metric text DEFAULT NULL::text, p_amount numeric DEFAULT NULL::numeric, p_period text DEFAULT 'month'::text, p_expires_at timestamp with time zone DEFAULT NULL::timestamp with time zone, p_starts_at timestamp with time zone DEFAULT now(), p_reason text DEFAULT ''::text, p_kind text DEFAULT ''::text) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path TO 'usage', 'pg_temp'
    AS $_$
DECLARE
    v_id   bigint;
    v_user bigint := COALESCE(p_user_id, 0);
    v_org  bigint := COALESCE(p_org_id, 0);
BEGIN
    IF (p_user_id IS NULL) = (p_org_id IS NULL) THEN
        RAISE EXCEPTION 'usage_grant: give exactly one of p_user_id and p_org_id (got %)',
              CASE WHEN p_user_id IS NULL THEN 'neither' ELSE 'both' END
              USING ERRCODE = '22023', HINT = 'p_user_id for a user''s own quota, p_org_id for an organization''s';
    END IF;
    IF p_org_id <= 0 THEN
        RAISE EXCEPTION 'usage_grant: p_org_id %: organization % cannot exist (organization ids are above 0)', p_org_id, p_org_id
              USING ERRCODE = '22023', HINT = 'p_user_id for a user''s own quota';
    END IF;
    IF p_metric IS NULL OR p_metric NOT IN ('requests', 'messages', 'tokens', 'bytes', 'cost') THEN
        RAISE EXCEPTION 'usage_grant: p_metric % is not a metric', COALESCE(quote_literal(p_metric), 'NULL')
              USING ERRCODE = '22023', HINT = 'one of requests, messages, tokens, bytes, cost';
    END IF;
    IF p_amount IS NULL OR NOT (p_amount > 0) OR p_amount = 'Infinity'::numeric OR p_amount = 'NaN'::numeric THEN
        RAISE EXCEPTION 'usage_grant: p_amount must be a number above 0, got %', COALESCE(p_amount::text, 'NULL')
              USING ERRCODE = '22023';
    END IF;
    IF p_period IS NULL OR p_period NOT IN ('day', 'month') THEN
        RAISE EXCEPTION 'usage_grant: p_period % is not a period kind', COALESCE(quote_literal(p_period), 'NULL')
              USING ERRCODE = '22023', HINT = 'day or month';
    END IF;
    IF p_kind IS NULL OR p_kind !~ '^([a-z][a-z0-9_]{0,63})?$' THEN
        RAISE EXCEPTION 'usage_grant: p_kind % is not an event kind', COALESCE(quote_literal(p_kind), 'NULL')
              USING ERRCODE = '22023', HINT = ''''' for the limit over all kinds, or a kind such as image_generation';
    END IF;
    IF p_starts_at IS NULL OR NOT isfinite(p_starts_at) THEN
        RAISE EXCEPTION 'usage_grant: p_starts_at must be a finite instant, got %', COALESCE(p_starts_at::text, 'NULL')
              USING ERRCODE = '22023';
    END IF;
    IF p_expires_at IS NULL OR NOT isfinite(p_expires_at) OR p_expires_at <= p_starts_at THEN
        RAISE EXCEPTION 'usage_grant: p_expires_at (%) must be a finite instant after p_starts_at (%)',
              COALESCE(p_expires_at::text, 'NULL'), p_starts_at
              USING ERRCODE = '22023', HINT = 'for example p_expires_at => now() + interval ''90 days''';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM usage_subjects s WHERE s.user_id = v_user AND s.org_id = v_org) THEN
        RAISE EXCEPTION 'usage_grant: % does not exist',
              CASE WHEN v_org > 0 THEN 'organization ' || v_org ELSE 'user ' || v_user END
              USING ERRCODE = '23503', HINT = 'add it to users (or organizations) first';
    END IF;
    INSERT INTO usage_grants (user_id, org_id, metric, period, kind, amount, starts_at, expires_at, reason)
    VALUES (v_user, v_org, p_metric, p_period, p_kind, p_amount, p_starts_at, p_expires_at, COALESCE(p_reason, ''))
    RETURNING id INTO v_id;
    RETURN v_id;
END;
$_$;


--
-- Name: usage_grant_allocate(bigint[], timestamp with time zone[], timestamp with time zone[], numeric[], timestamp with time zone[], timestamp with time zone[], numeric[], numeric[], timestamp with time zone[], timestamp with time zone[], numeric[]); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_grant_allocate(g_id bigint[], g_from timestamp with time zone[], g_to timestamp with time zone[], g_amount numeric[], p_start timestamp with time zone[], p_end timestamp with time zone[], p_used numeric[], p_limit numeric[], c_since timestamp with time zone[], c_at timestamp with time zone[], c_used numeric[]) RETURNS TABLE(grant_id bigint, period_start timestamp with time zone, period_end timestamp with time zone, drawn numeric)
    LANGUAGE plpgsql IMMUTABLE
    AS $$
DECLARE
    n      integer := COALESCE(array_length(g_id, 1), 0);
    g_left numeric[] := g_amount;
    g_here numeric[];
    pts    timestamptz[];
    cum    numeric[];
    k      integer;
    v_at   timestamptz;
    v_over numeric;
    v_take numeric;
BEGIN
    IF n = 0 THEN
        RETURN;
    END IF;
    g_here := array_fill(0::numeric, ARRAY[n]);
    FOR j IN 1 .. COALESCE(array_length(p_start, 1), 0) LOOP
        CONTINUE WHEN p_limit[j] IS NULL OR p_used[j] <= p_limit[j];
        -- The period's cuts, in order (none, most often: grants that span it).
        pts := ARRAY[]::timestamptz[];
        FOR i IN 1 .. n LOOP
            FOREACH v_at IN ARRAY ARRAY[g_from[i], g_to[i]] LOOP
                IF v_at > p_start[j] AND v_at < p_end[j] AND NOT v_at = ANY (pts) THEN
                    k := COALESCE(array_length(pts, 1), 0);
                    pts := pts || v_at;
                    WHILE k >= 1 AND pts[k] > v_at LOOP
                        pts[k + 1] := pts[k];
                        pts[k] := v_at;
                        k := k - 1;
                    END LOOP;
                END IF;
            END LOOP;
        END LOOP;
        pts := ARRAY[p_start[j]] || pts || ARRAY[p_end[j]];
        -- The usage before each cut, never less than before the previous, never more than all.
        cum := ARRAY[0::numeric];
        FOR k IN 2 .. array_length(pts, 1) - 1 LOOP
            v_over := 0;
            FOR m IN 1 .. COALESCE(array_length(c_at, 1), 0) LOOP
                IF c_at[m] = pts[k] AND c_since[m] = p_start[j] THEN
                    v_over := c_used[m];
                    EXIT;
                END IF;
            END LOOP;
            cum := cum || LEAST(GREATEST(v_over, cum[k - 1]), p_used[j]);
        END LOOP;
        cum := cum || p_used[j];
        FOR k IN 1 .. array_length(pts, 1) - 1 LOOP
            v_over := GREATEST(cum[k + 1] - p_limit[j], 0) - GREATEST(cum[k] - p_limit[j], 0);
            CONTINUE WHEN v_over <= 0;
            FOR i IN 1 .. n LOOP
                EXIT WHEN v_over <= 0;
                IF g_from[i] <= pts[k] AND g_to[i] > pts[k] AND g_left[i] > 0 THEN
                    v_take := LEAST(v_over, g_left[i]);
                    g_left[i] := g_left[i] - v_take;
                    g_here[i] := g_here[i] + v_take;
                    v_over := v_over - v_take;
                END IF;
            END LOOP;
        END LOOP;
        FOR i IN 1 .. n LOOP
            IF g_here[i] > 0 THEN
                grant_id := g_id[i];
                period_start := p_start[j];
                period_end := p_end[j];
                drawn := g_here[i];
                RETURN NEXT;
                g_here[i] := 0;
            END IF;
        END LOOP;
    END LOOP;
END;
$$;


--
-- Name: usage_grant_balance(bigint, bigint, text, text, text, timestamp with time zone); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_grant_balance(p_user_id bigint, p_org_id bigint, p_metric text, p_period text, p_kind text, p_at timestamp with time zone) RETURNS TABLE(granted numeric, balance numeric)
    LANGUAGE sql STABLE
    AS $$
    WITH ledger AS MATERIALIZED (
        SELECT l.grant_id, sum(l.drawn) AS drawn
          FROM usage_grant_ledger(p_user_id, p_org_id, p_metric, p_period, p_kind, 'infinity', true) l
         GROUP BY l.grant_id
    )
    SELECT COALESCE(sum(g.amount), 0), COALESCE(sum(g.amount - COALESCE(l.drawn, 0)), 0)
      FROM usage_grants g
      LEFT JOIN ledger l ON l.grant_id = g.id
     WHERE g.user_id = p_user_id AND g.org_id = p_org_id AND g.metric = p_metric
       AND g.period = p_period AND g.kind = p_kind
       AND g.starts_at <= p_at AND p_at < LEAST(g.expires_at, COALESCE(g.voided_at, 'infinity'))
$$;


--
-- Name: usage_grant_ledger(bigint, bigint, text, text, text, timestamp with time zone, boolean); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_grant_ledger(p_user_id bigint, p_org_id bigint, p_metric text, p_period text, p_kind text, p_through timestamp with time zone, p_pending boolean) RETURNS TABLE(grant_id bigint, period_start timestamp with time zone, period_end timestamp with time zone, drawn numeric)
    LANGUAGE plpgsql STABLE
    AS $$
DECLARE
    g_id     bigint[];
    g_from   timestamptz[];
    g_to     timestamptz[];
    g_amount numeric[];
    v_first  timestamptz;
    v_last   timestamptz;
    v_from   timestamptz;
    v_limit  numeric;
    v_tz     text;
    v_anchor integer;
    ps       timestamptz[];
    pe       timestamptz[];
    pu       numeric[];
    pl       numeric[];
    cs       timestamptz[];
    ca       timestamptz[];
    cu       numeric[];
BEGIN
    -- The grants, earliest expiry first, and the plan's limit now: one statement.
    SELECT x.ids, x.froms, x.tos, x.amounts, x.first, x.last, l.max_value, su.timezone,
           su.billing_anchor_day
      INTO g_id, g_from, g_to, g_amount, v_first, v_last, v_limit, v_tz, v_anchor
      FROM usage_subjects su
      LEFT JOIN plan_limits l ON l.plan_id = su.plan_id AND l.period = p_period
                             AND l.kind = p_kind AND l.metric = p_metric
     CROSS JOIN LATERAL (
            SELECT array_agg(g.id ORDER BY g.expires_at, g.id) AS ids,
                   array_agg(g.starts_at ORDER BY g.expires_at, g.id) AS froms,
                   array_agg(LEAST(g.expires_at, COALESCE(g.voided_at, 'infinity')) ORDER BY g.expires_at, g.id) AS tos,
                   array_agg(g.amount ORDER BY g.expires_at, g.id) AS amounts,
                   min(g.starts_at) AS first,
                   max(LEAST(g.expires_at, COALESCE(g.voided_at, 'infinity'))) AS last
              FROM usage_grants g
             WHERE g.user_id = p_user_id AND g.org_id = p_org_id AND g.metric = p_metric
               AND g.period = p_period AND g.kind = p_kind
               AND g.starts_at < LEAST(g.expires_at, COALESCE(g.voided_at, 'infinity'))) x
     WHERE su.user_id = p_user_id AND su.org_id = p_org_id;
    IF g_id IS NULL THEN
        RETURN;
    END IF;
    -- Events not counted yet are read from the start of the period of the earliest grant on.
    IF p_pending THEN
        v_tz := usage_timezone_or_utc(v_tz);
        SELECT LEAST(v_first, (usage_period_bounds(v_tz, v_anchor, p_period, v_first)).period_start,
                     (SELECT min(up.period_start) FROM usage_periods up
                       WHERE up.user_id = p_user_id AND up.org_id = p_org_id AND up.period = p_period
                         AND up.period_end > v_first))
          INTO v_from;
    END IF;
    -- The periods the grants span, with their usage and limit.
    WITH counted AS (
        SELECT up.period_start, up.period_end, up.limits,
               CASE WHEN p_kind = '' THEN
                        CASE p_metric WHEN 'requests' THEN up.requests::numeric WHEN 'messages' THEN up.messages::numeric
                                      WHEN 'tokens' THEN up.tokens::numeric WHEN 'bytes' THEN up.bytes::numeric
                                      ELSE up.cost END
                    ELSE COALESCE(CASE p_metric WHEN 'requests' THEN k.requests::numeric WHEN 'messages' THEN k.messages::numeric
                                                WHEN 'tokens' THEN k.tokens::numeric WHEN 'bytes' THEN k.bytes::numeric
                                                ELSE k.cost END, 0) END AS used
          FROM usage_periods up
          LEFT JOIN usage_period_kind_totals k
            ON p_kind <> '' AND k.user_id = up.user_id AND k.org_id = up.org_id
           AND k.period = up.period AND k.period_start = up.period_start AND k.kind = p_kind
         WHERE up.user_id = p_user_id AND up.org_id = p_org_id AND up.period = p_period
           AND up.period_end > v_first AND up.period_start < v_last
           AND up.period_start <= p_through
    ), pending AS MATERIALIZED (
        SELECT e.created_at,
               CASE p_metric WHEN 'requests' THEN 1::numeric WHEN 'messages' THEN e.messages::numeric
                             WHEN 'tokens' THEN e.tokens::numeric WHEN 'bytes' THEN e.bytes::numeric
                             ELSE e.cost END AS amount
          FROM usage_subject_pending(p_user_id, p_org_id, v_from, 'infinity') e
         WHERE p_pending AND (p_kind = '' OR e.kind = p_kind)
    ), periods AS (
        SELECT c.period_start, c.period_end, c.limits,
               c.used + COALESCE((SELECT sum(e.amount) FROM pending e
                                   WHERE e.created_at >= c.period_start AND e.created_at < c.period_end), 0) AS used
          FROM counted c
        UNION ALL
        -- Events not counted yet in a period not opened yet: its natural bounds.
        SELECT b.period_start, b.period_end, NULL::jsonb, sum(e.amount)
          FROM pending e
         CROSS JOIN LATERAL usage_period_bounds(v_tz, v_anchor, p_period, e.created_at) b
         WHERE NOT EXISTS (SELECT 1 FROM counted c WHERE e.created_at >= c.period_start AND e.created_at < c.period_end)
           AND b.period_start <= p_through
           AND b.period_end > v_first AND b.period_start < v_last
         GROUP BY b.period_start, b.period_end
    )
    SELECT array_agg(x.period_start ORDER BY x.period_start), array_agg(x.period_end ORDER BY x.period_start),
           array_agg(x.used ORDER BY x.period_start), array_agg(x.lim ORDER BY x.period_start)
      INTO ps, pe, pu, pl
      FROM (SELECT p.*, CASE WHEN p.limits IS NULL THEN v_limit
                             ELSE (SELECT (j ->> 'max_value')::numeric FROM jsonb_array_elements(p.limits) j
                                    WHERE j ->> 'metric' = p_metric AND j ->> 'kind' = p_kind LIMIT 1) END AS lim
              FROM periods p) x;
    -- The usage before each cut of a period past its limit (a mark, else the events).
    SELECT array_agg(c.since), array_agg(c.at),
           array_agg(usage_grant_usage_before(p_user_id, p_org_id, p_period, p_kind, p_metric,
                                              c.since, c.at, p_pending))
      INTO cs, ca, cu
      FROM (SELECT DISTINCT x.since, b.at
              FROM unnest(ps, pe, pu, pl) AS x (since, until, used, lim)
             CROSS JOIN unnest(g_from || g_to) AS b (at)
             WHERE b.at > x.since AND b.at < x.until AND x.used > x.lim) c;
    RETURN QUERY SELECT * FROM usage_grant_allocate(g_id, g_from, g_to, g_amount, ps, pe, pu, pl, cs, ca, cu);
END;
$$;


--
-- Name: usage_grant_settle(); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_grant_settle() RETURNS bigint
    LANGUAGE plpgsql
    SET plan_cache_mode TO 'force_custom_plan'
    AS $$
DECLARE
    v_changed bigint;
    v_users   bigint[];
    v_orgs    bigint[];
    v_ids     bigint[];
    v_rows    text[];
BEGIN
    -- The flagged grants as they are now (id and row version), and their subjects.
    SELECT array_agg(g.id), array_agg(g.xmin::text) INTO v_ids, v_rows
      FROM usage_grants g WHERE NOT g.settled;
    IF v_ids IS NULL THEN
        RETURN 0;
    END IF;
    SELECT array_agg(s.user_id), array_agg(s.org_id) INTO v_users, v_orgs
      FROM (SELECT DISTINCT g.user_id, g.org_id FROM usage_grants g WHERE g.id = ANY (v_ids)) s;

    DELETE FROM usage_grant_marks m
     USING unnest(v_users, v_orgs) AS s (user_id, org_id)
     WHERE m.user_id = s.user_id AND m.org_id = s.org_id
       AND (NOT EXISTS (SELECT 1 FROM usage_periods up
                         WHERE up.user_id = m.user_id AND up.org_id = m.org_id AND up.period = m.period
                           AND up.period_start = m.since AND up.period_end > m.at)
            OR NOT EXISTS (SELECT 1 FROM usage_grants g
                            WHERE g.user_id = m.user_id AND g.org_id = m.org_id AND g.period = m.period
                              AND g.kind = m.kind
                              AND m.at IN (g.starts_at, LEAST(g.expires_at, COALESCE(g.voided_at, 'infinity')))));
    -- The missing marks first (a CTE the planner keeps apart), so that only they read events.
    WITH missing AS MATERIALIZED (
        SELECT c.*, up.period_start
          FROM (SELECT DISTINCT g.user_id, g.org_id, g.period, g.kind, b.at
                  FROM unnest(v_users, v_orgs) AS s (user_id, org_id)
                  JOIN usage_grants g ON g.user_id = s.user_id AND g.org_id = s.org_id
                 CROSS JOIN LATERAL (VALUES (g.starts_at), (LEAST(g.expires_at, COALESCE(g.voided_at, 'infinity')))) b (at)) c
          JOIN usage_periods up
            ON up.user_id = c.user_id AND up.org_id = c.org_id AND up.period = c.period
           AND c.at > up.period_start AND c.at < up.period_end
         WHERE NOT EXISTS (SELECT 1 FROM usage_grant_marks m
                            WHERE m.user_id = c.user_id AND m.org_id = c.org_id AND m.period = c.period
                              AND m.kind = c.kind AND m.at = c.at)
    )
    INSERT INTO usage_grant_marks (user_id, org_id, period, kind, at, since, requests, messages, tokens, bytes, cost)
    SELECT c.user_id, c.org_id, c.period, c.kind, c.at, c.period_start, x.requests, x.messages, x.tokens, x.bytes, x.cost
      FROM missing c
     CROSS JOIN LATERAL (
            SELECT count(*) AS requests, COALESCE(sum(e.messages), 0) AS messages,
                   COALESCE(sum(e.tokens), 0) AS tokens, COALESCE(sum(e.bytes), 0) AS bytes,
                   COALESCE(sum(e.cost), 0) AS cost
              FROM usage_events e
             WHERE ((c.org_id = 0 AND e.org_id IS NULL AND e.user_id = c.user_id) OR (c.org_id > 0 AND e.org_id = c.org_id))
               AND e.created_at >= c.period_start AND e.created_at < c.at
               AND (c.kind = '' OR e.kind = c.kind)
               AND e.recorded_xid < (SELECT w.xid FROM aggregation_watermark w)
               AND NOT EXISTS (SELECT 1 FROM usage_quarantine q
                                WHERE q.event_id = e.id AND q.created_at = e.created_at)) x;

    -- The drawdown of every key of those subjects, gathered set-based for
    -- usage_grant_allocate() (what usage_grant_ledger() gathers for one key, counted only;
    -- every cut has its mark now).
    WITH keys AS MATERIALIZED (
        SELECT g.user_id, g.org_id, g.metric, g.period, g.kind,
               array_agg(g.id ORDER BY g.expires_at, g.id) AS ids,
               array_agg(g.starts_at ORDER BY g.expires_at, g.id) AS froms,
               array_agg(LEAST(g.expires_at, COALESCE(g.voided_at, 'infinity')) ORDER BY g.expires_at, g.id) AS tos,
               array_agg(g.amount ORDER BY g.expires_at, g.id) AS amounts,
               min(g.starts_at) AS first,
               max(LEAST(g.expires_at, COALESCE(g.voided_at, 'infinity'))) AS last
          FROM unnest(v_users, v_orgs) AS s (user_id, org_id)
          JOIN usage_grants g ON g.user_id = s.user_id AND g.org_id = s.org_id
         WHERE g.starts_at < LEAST(g.expires_at, COALESCE(g.voided_at, 'infinity'))
         GROUP BY g.user_id, g.org_id, g.metric, g.period, g.kind
    ), fresh AS MATERIALIZED (
        SELECT a.*
          FROM keys k
          JOIN usage_subjects su ON su.user_id = k.user_id AND su.org_id = k.org_id
          LEFT JOIN plan_limits l ON l.plan_id = su.plan_id AND l.period = k.period
                                 AND l.kind = k.kind AND l.metric = k.metric
         CROSS JOIN LATERAL (
                SELECT array_agg(up.period_start ORDER BY up.period_start) AS starts,
                       array_agg(up.period_end ORDER BY up.period_start) AS ends,
                       array_agg(CASE WHEN k.kind = '' THEN
                                          CASE k.metric WHEN 'requests' THEN up.requests::numeric WHEN 'messages' THEN up.messages::numeric
                                                        WHEN 'tokens' THEN up.tokens::numeric WHEN 'bytes' THEN up.bytes::numeric
                                                        ELSE up.cost END
                                      ELSE COALESCE(CASE k.metric WHEN 'requests' THEN t.requests::numeric WHEN 'messages' THEN t.messages::numeric
                                                                  WHEN 'tokens' THEN t.tokens::numeric WHEN 'bytes' THEN t.bytes::numeric
                                                                  ELSE t.cost END, 0) END
                                 ORDER BY up.period_start) AS used,
                       array_agg(CASE WHEN up.limits IS NULL THEN l.max_value
                                      ELSE (SELECT (j ->> 'max_value')::numeric FROM jsonb_array_elements(up.limits) j
                                             WHERE j ->> 'metric' = k.metric AND j ->> 'kind' = k.kind LIMIT 1) END
                                 ORDER BY up.period_start) AS limits
                  FROM usage_periods up
                  LEFT JOIN usage_period_kind_totals t
                    ON k.kind <> '' AND t.user_id = up.user_id AND t.org_id = up.org_id
                   AND t.period = up.period AND t.period_start = up.period_start AND t.kind = k.kind
                 WHERE up.user_id = k.user_id AND up.org_id = k.org_id AND up.period = k.period
                   AND up.period_end > k.first AND up.period_start < k.last) p
         CROSS JOIN LATERAL (
                SELECT array_agg(m.since) AS since, array_agg(m.at) AS at,
                       array_agg(CASE k.metric WHEN 'requests' THEN m.requests::numeric WHEN 'messages' THEN m.messages::numeric
                                               WHEN 'tokens' THEN m.tokens::numeric WHEN 'bytes' THEN m.bytes::numeric
                                               ELSE m.cost END) AS used
                  FROM usage_grant_marks m
                 WHERE m.user_id = k.user_id AND m.org_id = k.org_id AND m.period = k.period
                   AND m.kind = k.kind) c
         CROSS JOIN LATERAL usage_grant_allocate(k.ids, k.froms, k.tos, k.amounts, p.starts, p.ends,
                                                 p.used, p.limits, c.since, c.at, c.used) a
    ), gone AS (
        DELETE FROM usage_grant_draws d
         USING usage_grants g, unnest(v_users, v_orgs) AS s (user_id, org_id)
         WHERE d.grant_id = g.id AND g.user_id = s.user_id AND g.org_id = s.org_id
           AND NOT EXISTS (SELECT 1 FROM fresh f WHERE f.grant_id = d.grant_id AND f.period_start = d.period_start)
        RETURNING 1
    ), written AS (
        INSERT INTO usage_grant_draws AS d (grant_id, period_start, period_end, drawn)
        SELECT f.grant_id, f.period_start, f.period_end, f.drawn FROM fresh f
        ON CONFLICT (grant_id, period_start) DO UPDATE
           SET drawn = EXCLUDED.drawn, period_end = EXCLUDED.period_end, recorded_at = now()
         WHERE d.drawn <> EXCLUDED.drawn OR d.period_end <> EXCLUDED.period_end
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM gone) + (SELECT count(*) FROM written) INTO v_changed;
    -- Settled: the grants flagged at the start and not changed since. One made or voided by
    -- another transaction meanwhile stays flagged, for the next call.
    UPDATE usage_grants g SET settled = true
      FROM unnest(v_ids, v_rows) AS s (id, row_version)
     WHERE g.id = s.id AND g.xmin::text = s.row_version AND NOT g.settled;
    RETURN v_changed;
END;
$$;


--
-- Name: usage_grant_usage_before(bigint, bigint, text, text, text, timestamp with time zone, timestamp with time zone, boolean); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_grant_usage_before(p_user_id bigint, p_org_id bigint, p_period text, p_kind text, p_metric text, p_since timestamp with time zone, p_at timestamp with time zone, p_pending boolean) RETURNS numeric
    LANGUAGE plpgsql STABLE
    AS $$
DECLARE
    v_counted numeric;
    v_pending numeric := 0;
BEGIN
    SELECT CASE p_metric WHEN 'requests' THEN m.requests::numeric WHEN 'messages' THEN m.messages::numeric
                         WHEN 'tokens' THEN m.tokens::numeric WHEN 'bytes' THEN m.bytes::numeric
                         ELSE m.cost END
      INTO v_counted
      FROM usage_grant_marks m
     WHERE m.user_id = p_user_id AND m.org_id = p_org_id AND m.period = p_period
       AND m.kind = p_kind AND m.at = p_at AND m.since = p_since;
    IF NOT FOUND THEN
        SELECT COALESCE(sum(CASE p_metric WHEN 'requests' THEN 1::numeric WHEN 'messages' THEN e.messages::numeric
                                          WHEN 'tokens' THEN e.tokens::numeric WHEN 'bytes' THEN e.bytes::numeric
                                          ELSE e.cost END), 0)
          INTO v_counted
          FROM usage_events e
         WHERE ((p_org_id = 0 AND e.org_id IS NULL AND e.user_id = p_user_id) OR (p_org_id > 0 AND e.org_id = p_org_id))
           AND e.created_at >= p_since AND e.created_at < p_at
           AND (p_kind = '' OR e.kind = p_kind)
           AND e.recorded_xid < (SELECT w.xid FROM aggregation_watermark w)
           AND NOT EXISTS (SELECT 1 FROM usage_quarantine q
                            WHERE q.event_id = e.id AND q.created_at = e.created_at);
    END IF;
    IF p_pending THEN
        SELECT COALESCE(sum(CASE p_metric WHEN 'requests' THEN 1::numeric WHEN 'messages' THEN e.messages::numeric
                                          WHEN 'tokens' THEN e.tokens::numeric WHEN 'bytes' THEN e.bytes::numeric
                                          ELSE e.cost END), 0)
          INTO v_pending
          FROM usage_subject_pending(p_user_id, p_org_id, p_since, p_at) e
         WHERE p_kind = '' OR e.kind = p_kind;
    END IF;
    RETURN v_counted + v_pending;
END;
$$;


--
-- Name: usage_hmac_sha256(bytea, bytea); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_hmac_sha256(p_key bytea, p_message bytea) RETURNS bytea
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
    AS $$
DECLARE
    v_key   bytea := CASE WHEN length(p_key) > 64 THEN sha256(p_key) ELSE p_key END;
    v_inner bytea;
    v_outer bytea;
BEGIN
    v_key := v_key || decode(repeat('00', 64 - length(v_key)), 'hex');
    v_inner := v_key;
    v_outer := v_key;
    FOR i IN 0..63 LOOP
        v_inner := set_byte(v_inner, i, get_byte(v_key, i) # 54);  -- 0x36
        v_outer := set_byte(v_outer, i, get_byte(v_key, i) # 92);  -- 0x5c
    END LOOP;
    RETURN sha256(v_outer || sha256(v_inner || p_message));
END;
$$;


--
-- Name: usage_is_reader(); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_is_reader() RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
    SELECT COALESCE(pg_has_role(current_user, to_regrole('usage_reader'), 'MEMBER'), false)
$$;


--
-- Name: usage_limit_checks(bigint, bigint, text, timestamp with time zone, numeric, numeric, numeric, numeric); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_limit_checks(p_user_id bigint, p_org_id bigint, p_kind text, p_at timestamp with time zone, p_messages numeric, p_tokens numeric, p_bytes numeric, p_cost numeric) RETURNS TABLE(metric text, period text, kind text, enforcement text, limit_value numeric, used numeric, amount numeric, fits boolean, period_end timestamp with time zone, balance numeric)
    LANGUAGE sql STABLE
    AS $$
    SELECT s.metric, s.period, s.kind, s.enforcement, s.limit_value, s.used, a.amount,
           s.used + a.amount <= GREATEST(s.limit_value, s.used) + s.grant_remaining, s.period_end,
           s.grant_remaining
      FROM usage_subject_status(p_user_id, p_org_id, p_at) s
      JOIN (VALUES ('requests', 1::numeric), ('messages', p_messages), ('tokens', p_tokens),
                   ('bytes', p_bytes), ('cost', p_cost)) AS a (metric, amount)
        ON a.metric = s.metric
     WHERE NOT s.unlimited AND (s.kind = '' OR s.kind = p_kind) AND a.amount > 0
$$;


--
-- Name: usage_local_midnight(date, text); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_local_midnight(d date, tz text) RETURNS timestamp with time zone
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    AS $$
DECLARE
    later   timestamptz := d::timestamp AT TIME ZONE tz;
    day_before timestamptz := later - interval '1 day';
    earlier timestamptz := (d::timestamp - ((day_before AT TIME ZONE tz) - (day_before AT TIME ZONE 'UTC')))
                           AT TIME ZONE 'UTC';
BEGIN
    IF earlier < later AND (earlier AT TIME ZONE tz) = d::timestamp THEN
        RETURN earlier;
    END IF;
    RETURN later;
END;
$$;


--
-- Name: usage_member_check(bigint, bigint); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_member_check(p_user_id bigint, p_org_id bigint) RETURNS void
    LANGUAGE plpgsql STABLE
    AS $$
BEGIN
    IF p_org_id IS NOT NULL AND NOT EXISTS (
           SELECT 1 FROM organization_members m WHERE m.org_id = p_org_id AND m.user_id = p_user_id) THEN
        RAISE EXCEPTION 'usage_record: user % is not a member of organization %', p_user_id, p_org_id
              USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'usage_record_org_member',
                    HINT = 'add the user to organization_members, or record the usage as personal (p_org_id => NULL)';
    END IF;
END;
$$;


--
-- Name: usage_partition_policies(regclass); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_partition_policies(p_table regclass) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', p_table);
    EXECUTE format('CREATE POLICY usage_not_reader ON %s
                        USING (NOT (SELECT usage_is_reader()))
                        WITH CHECK (NOT (SELECT usage_is_reader()))', p_table);
    EXECUTE format('CREATE POLICY usage_reader_own_org ON %s FOR SELECT
                        USING (org_id > 0 AND org_id = (SELECT usage_current_org()))', p_table);
END;
$$;


--
-- Name: usage_period_between(timestamp with time zone, timestamp with time zone, timestamp with time zone, timestamp with time zone); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_period_between(p_natural_start timestamp with time zone, p_natural_end timestamp with time zone, p_prev_end timestamp with time zone, p_next_start timestamp with time zone) RETURNS TABLE(period_start timestamp with time zone, period_end timestamp with time zone)
    LANGUAGE sql IMMUTABLE ROWS 1 PARALLEL SAFE
    AS $$
    SELECT GREATEST(p_natural_start, p_prev_end), LEAST(p_natural_end, p_next_start)
$$;


--
-- Name: usage_period_bounds(text, integer, text, timestamp with time zone); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_period_bounds(tz text, anchor_day integer, period text, at timestamp with time zone, OUT period_start timestamp with time zone, OUT period_end timestamp with time zone) RETURNS record
    LANGUAGE plpgsql STABLE
    AS $$
DECLARE
    zone  text := CASE WHEN usage_timezone_is_valid(tz) THEN tz ELSE 'UTC' END;
    dates record;
BEGIN
    IF anchor_day IS NOT NULL AND anchor_day NOT BETWEEN 1 AND 31 THEN
        RAISE EXCEPTION 'billing anchor day % is out of range; expected 1..31 or NULL', anchor_day
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF at IS NULL THEN
        RETURN;
    END IF;
    dates := usage_period_dates((at AT TIME ZONE zone)::date, anchor_day, period);
    period_start := usage_local_midnight(dates.start_date, zone);
    period_end := usage_local_midnight(dates.end_date, zone);
    -- A clock change straddling midnight can put `at` outside the bounds of its local date:
    -- it then belongs to the neighbouring period.
    IF at < period_start THEN
        dates := usage_period_dates(dates.start_date - 1, anchor_day, period);
    ELSIF at >= period_end THEN
        dates := usage_period_dates(dates.end_date, anchor_day, period);
    ELSE
        RETURN;
    END IF;
    period_start := usage_local_midnight(dates.start_date, zone);
    period_end := usage_local_midnight(dates.end_date, zone);
END;
$$;


--
-- Name: usage_period_dates(date, integer, text); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_period_dates(d date, anchor_day integer, period text, OUT start_date date, OUT end_date date) RETURNS record
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    AS $$
DECLARE
    a    int := COALESCE(anchor_day, 1);
    m    date := date_trunc('month', d)::date;
    next date;
BEGIN
    IF period = 'day' THEN
        start_date := d;
        end_date := d + 1;
    ELSIF period = 'month' THEN
        -- (m + 1 month) - m is the month's length in days.
        start_date := m + (LEAST(a, (m + interval '1 month')::date - m) - 1);
        IF start_date > d THEN
            m := (m - interval '1 month')::date;
            start_date := m + (LEAST(a, (m + interval '1 month')::date - m) - 1);
        END IF;
        next := (m + interval '1 month')::date;
        end_date := next + (LEAST(a, (next + interval '1 month')::date - next) - 1);
    ELSE
        RAISE EXCEPTION 'unknown period "%"; expected day or month', period
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
END;
$$;


--
-- Name: usage_periods_delete_kind_totals(); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_periods_delete_kind_totals() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    EXECUTE format(
        'DELETE FROM %I.usage_period_kind_totals k
          USING deleted_periods d
          WHERE k.user_id = d.user_id AND k.org_id = d.org_id AND k.period = d.period
            AND k.period_start = d.period_start', TG_TABLE_SCHEMA);
    RETURN NULL;
END;
$$;


--
-- Name: usage_projected_exhaustion(numeric, numeric, timestamp with time zone, timestamp with time zone, timestamp with time zone); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_projected_exhaustion(p_used numeric, p_limit numeric, p_period_start timestamp with time zone, p_period_end timestamp with time zone, p_at timestamp with time zone) RETURNS timestamp with time zone
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    AS $$
DECLARE
    v_elapsed numeric;
BEGIN
    IF p_limit IS NULL OR p_used IS NULL OR p_used <= 0 OR p_limit < 0
       OR p_at <= p_period_start OR p_at >= p_period_end
       OR NOT isfinite(p_period_start) OR NOT isfinite(p_period_end) THEN
        RETURN NULL;
    END IF;
    v_elapsed := extract(epoch FROM p_at - p_period_start);
    IF p_limit * v_elapsed >= p_used * extract(epoch FROM p_period_end - p_period_start) THEN
        RETURN NULL;
    END IF;
    RETURN p_period_start + make_interval(secs => (p_limit * v_elapsed / p_used)::float8);
END;
$$;


--
-- Name: usage_rebase_watermark(boolean); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_rebase_watermark(p_force boolean DEFAULT false) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path TO 'usage', 'pg_temp'
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


--
-- Name: usage_record(bigint, text, bigint, bigint, bigint, integer, bigint, numeric, text, text, jsonb, timestamp with time zone, bigint, text); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_record(p_user_id bigint, p_kind text, p_tokens bigint DEFAULT 0, p_prompt_tokens bigint DEFAULT 0, p_completion_tokens bigint DEFAULT 0, p_messages integer DEFAULT 0, p_bytes bigint DEFAULT 0, p_cost numeric DEFAULT NULL::numeric, p_request_type text DEFAULT ''::text, p_model text DEFAULT ''::text, p_metadata jsonb DEFAULT '{}'::jsonb, p_created_at timestamp with time zone DEFAULT now(), p_org_id bigint DEFAULT NULL::bigint, p_idempotency_key text DEFAULT NULL::text) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path TO 'usage', 'pg_temp'
    AS $$
DECLARE
    v_tokens bigint;
    v_cost   numeric;
    v_id     bigint;
    v_claim  bigint;
    v_subject_user bigint;
    v_subject_org  bigint;
    v_hard   boolean;
BEGIN
    -- One statement: the amounts, the subject, and whether its plan has a hard limit that an
    -- event of this kind adds to (the insert path of every call; nothing else is looked up).
    SELECT a.tokens, a.cost, s.user_id, s.org_id,
           EXISTS (SELECT 1 FROM usage_subjects su
                     JOIN plan_limits l ON l.plan_id = su.plan_id
                    WHERE su.user_id = s.user_id AND su.org_id = s.org_id
                      AND l.enforcement = 'hard' AND (l.kind = '' OR l.kind = p_kind))
      INTO v_tokens, v_cost, v_subject_user, v_subject_org, v_hard
      FROM usage_event_amounts(p_kind, p_tokens, p_prompt_tokens, p_completion_tokens, p_bytes,
                               p_cost, p_model, p_created_at) a
     CROSS JOIN usage_event_subject(p_user_id, p_org_id) s;
    v_id := nextval('usage_events_id_seq');
    IF p_idempotency_key IS NOT NULL THEN
        -- Claim the key for this event. A concurrent call with the same key waits here for
        -- the first to commit, then finds the key taken; a key older than the window is
        -- taken over. Either way exactly one event carries the key, and a retry is answered
        -- with it before any limit is checked.
        INSERT INTO usage_idempotency_keys AS k
               (org_id, user_id, idempotency_key, event_id, event_created_at)
        VALUES (COALESCE(p_org_id, 0), p_user_id, p_idempotency_key, v_id, p_created_at)
        ON CONFLICT (org_id, scope_user_id, idempotency_key) DO UPDATE
           SET user_id = EXCLUDED.user_id, event_id = EXCLUDED.event_id,
               event_created_at = EXCLUDED.event_created_at, recorded_at = now()
         WHERE k.recorded_at < now() - make_interval(days => (SELECT s.idempotency_days FROM usage_settings s))
        RETURNING k.event_id INTO v_claim;
        IF v_claim IS NULL THEN
            SELECT k.event_id INTO v_claim
              FROM usage_idempotency_keys k
             WHERE k.org_id = v_subject_org
               AND k.scope_user_id = v_subject_user
               AND k.idempotency_key = p_idempotency_key;
            RETURN v_claim;
        END IF;
    END IF;
    -- After the claim: a retry whose user has left the organization since still gets its
    -- event's id; a refusal here rolls the claim back with the call.
    IF p_org_id IS NOT NULL THEN
        PERFORM usage_member_check(p_user_id, p_org_id);
    END IF;
    -- Hard limits, only for a subject whose plan has one that an event of this kind adds to.
    IF v_hard THEN
        -- A bad event is refused for what it is, as the insert would, before any limit.
        PERFORM usage_event_check(p_kind, COALESCE(p_request_type, ''), COALESCE(p_model, ''),
                                  COALESCE(p_metadata, '{}'), p_created_at, v_tokens,
                                  COALESCE(p_prompt_tokens, 0), COALESCE(p_completion_tokens, 0),
                                  COALESCE(p_messages, 0), COALESCE(p_bytes, 0), v_cost, p_org_id);
        PERFORM usage_enforce_hard_limits(v_subject_user, v_subject_org, p_kind,
                                          p_created_at, COALESCE(p_messages, 0), v_tokens,
                                          COALESCE(p_bytes, 0), v_cost);
    END IF;
    INSERT INTO usage_events (id, user_id, org_id, kind, request_type, model, tokens, prompt_tokens,
                              completion_tokens, messages, bytes, cost, metadata, created_at)
    VALUES (v_id, p_user_id, p_org_id, p_kind, COALESCE(p_request_type, ''), COALESCE(p_model, ''),
            v_tokens, COALESCE(p_prompt_tokens, 0), COALESCE(p_completion_tokens, 0),
            COALESCE(p_messages, 0), COALESCE(p_bytes, 0), v_cost,
            COALESCE(p_metadata, '{}'), p_created_at);
    RETURN v_id;
END;
$$;


--
-- Name: usage_set_alert_emails(bigint, text); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_set_alert_emails(p_user_id bigint, p_preference text) RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'usage', 'pg_temp'
    AS $$
DECLARE
    v_effective text;
BEGIN
    IF p_preference IS NULL OR p_preference NOT IN ('all', 'quota', 'credit', 'none') THEN
        RAISE EXCEPTION 'usage_set_alert_emails: p_preference % is not one of all, quota, credit, none; nothing changed', quote_nullable(p_preference)
              USING ERRCODE = '22023';
    END IF;
    UPDATE users u SET alert_emails = p_preference WHERE u.id = p_user_id
    RETURNING CASE WHEN u.alerts_enabled THEN u.alert_emails ELSE 'none' END INTO v_effective;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'usage_set_alert_emails: user % does not exist; nothing changed', p_user_id
              USING ERRCODE = '23503';
    END IF;
    RETURN v_effective;
END;
$$;


SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: token_usage_daily; Type: TABLE; Schema: usage; Owner: -
--

CREATE TABLE usage.token_usage_daily (
    user_id bigint NOT NULL,
    day date NOT NULL,
    kind text NOT NULL,
    request_type text NOT NULL,
    model text NOT NULL,
    events bigint DEFAULT 0 NOT NULL,
    tokens bigint DEFAULT 0 NOT NULL,
    prompt_tokens bigint DEFAULT 0 NOT NULL,
    completion_tokens bigint DEFAULT 0 NOT NULL,
    messages bigint DEFAULT 0 NOT NULL,
    bytes bigint DEFAULT 0 NOT NULL,
    cost numeric DEFAULT 0 NOT NULL,
    org_id bigint,
    org_key bigint GENERATED ALWAYS AS (COALESCE(org_id, (0)::bigint)) STORED NOT NULL
)
WITH (fillfactor='70');


--
-- Name: usage_subject_days(bigint, bigint, date, date); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_subject_days(p_user_id bigint, p_org_id bigint, p_from date, p_to date) RETURNS SETOF usage.token_usage_daily
    LANGUAGE sql STABLE
    AS $$
    SELECT d.* FROM token_usage_daily d
     WHERE p_org_id = 0 AND d.user_id = p_user_id AND d.org_id IS NULL
       AND d.day BETWEEN p_from AND p_to
    UNION ALL
    SELECT d.* FROM token_usage_daily d
     WHERE p_org_id > 0 AND d.org_id = p_org_id
       AND d.day BETWEEN p_from AND p_to
    UNION ALL
    SELECT e.user_id, (e.created_at AT TIME ZONE z.zone)::date, e.kind, e.request_type, e.model,
           1, e.tokens, e.prompt_tokens, e.completion_tokens, e.messages, e.bytes, e.cost,
           e.org_id, COALESCE(e.org_id, 0)
      FROM (SELECT usage_timezone_or_utc((SELECT s.timezone FROM usage_subjects s
                                           WHERE s.user_id = p_user_id
                                             AND s.org_id = p_org_id)) AS zone) z
     CROSS JOIN LATERAL usage_subject_pending(p_user_id, p_org_id,
                                              usage_local_midnight(p_from, z.zone),
                                              usage_local_midnight(p_to + 1, z.zone)) e
$$;


--
-- Name: usage_events; Type: TABLE; Schema: usage; Owner: -
--

CREATE TABLE usage.usage_events (
    id bigint NOT NULL,
    user_id bigint NOT NULL,
    kind text NOT NULL,
    request_type text DEFAULT ''::text NOT NULL,
    model text DEFAULT ''::text NOT NULL,
    tokens bigint DEFAULT 0 NOT NULL,
    prompt_tokens bigint DEFAULT 0 NOT NULL,
    completion_tokens bigint DEFAULT 0 NOT NULL,
    messages integer DEFAULT 0 NOT NULL,
    bytes bigint DEFAULT 0 NOT NULL,
    cost numeric(20,8) DEFAULT 0 NOT NULL,
    metadata jsonb DEFAULT '{}'::jsonb NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    recorded_xid xid8 DEFAULT pg_current_xact_id() NOT NULL,
    org_id bigint,
    CONSTRAINT usage_events_bytes_not_negative CHECK ((bytes >= 0)),
    CONSTRAINT usage_events_completion_tokens_not_negative CHECK ((completion_tokens >= 0)),
    CONSTRAINT usage_events_cost_not_negative CHECK ((cost >= (0)::numeric)),
    CONSTRAINT usage_events_kind_check CHECK ((kind ~ '^[a-z][a-z0-9_]{0,63}$'::text)),
    CONSTRAINT usage_events_messages_not_negative CHECK ((messages >= 0)),
    CONSTRAINT usage_events_metadata_size CHECK ((octet_length((metadata)::text) <= 65536)),
    CONSTRAINT usage_events_model_check CHECK ((length(model) <= 200)),
    CONSTRAINT usage_events_org_id_check CHECK ((org_id > 0)),
    CONSTRAINT usage_events_prompt_tokens_not_negative CHECK ((prompt_tokens >= 0)),
    CONSTRAINT usage_events_request_type_check CHECK ((request_type ~ '^([a-z0-9][a-z0-9_.-]{0,63})?$'::text)),
    CONSTRAINT usage_events_tokens_not_negative CHECK ((tokens >= 0))
)
PARTITION BY RANGE (created_at);


--
-- Name: usage_subject_pending(bigint, bigint, timestamp with time zone, timestamp with time zone); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_subject_pending(p_user_id bigint, p_org_id bigint, p_from timestamp with time zone, p_to timestamp with time zone) RETURNS SETOF usage.usage_events
    LANGUAGE sql STABLE
    AS $$
    SELECT e.* FROM usage_events e
     WHERE (CASE WHEN e.org_id IS NULL THEN e.user_id ELSE 0 END)
           = CASE WHEN p_org_id > 0 THEN 0 ELSE p_user_id END
       AND (CASE WHEN e.org_id IS NULL THEN 0 ELSE e.org_id END) = p_org_id
       AND e.recorded_xid >= (SELECT w.xid FROM aggregation_watermark w)
       AND e.created_at >= p_from AND e.created_at < p_to
       AND usage_event_problem(e.created_at, e.cost) IS NULL
$$;


--
-- Name: usage_subject_status(bigint, bigint, timestamp with time zone); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_subject_status(p_user_id bigint, p_org_id bigint, p_at timestamp with time zone) RETURNS TABLE(metric text, period text, kind text, used numeric, limit_value numeric, remaining numeric, unlimited boolean, exceeded boolean, percent numeric, period_start timestamp with time zone, period_end timestamp with time zone, enforcement text, granted numeric, grant_remaining numeric, projected_exhaustion timestamp with time zone)
    LANGUAGE plpgsql STABLE
    AS $$
#variable_conflict use_column
DECLARE
    d record;
    m record;
    d_known boolean;
    m_known boolean;
    b      record;
    p_tz     text;
    p_anchor integer;
    p_plan   bigint;
    grant_keys text[];
BEGIN
    -- The subject, and the limits it has grants on ('metric/period/kind'): only those read them.
    SELECT su.timezone, su.billing_anchor_day, su.plan_id,
           (SELECT array_agg(DISTINCT g.metric || '/' || g.period || '/' || g.kind)
              FROM usage_grants g WHERE g.user_id = p_user_id AND g.org_id = p_org_id)
      INTO p_tz, p_anchor, p_plan, grant_keys
      FROM usage_subjects su
     WHERE su.user_id = p_user_id AND su.org_id = p_org_id;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- Each period kind's latest period starting at or before `at`: the current one if it has
    -- not ended; else its natural bounds after that one, nothing counted yet.
    SELECT up.period_start, up.period_end, up.requests, up.messages, up.tokens, up.bytes, up.cost INTO d
      FROM usage_periods up
     WHERE up.user_id = p_user_id AND up.org_id = p_org_id AND up.period = 'day'
       AND up.period_start <= p_at
     ORDER BY up.period_start DESC
     LIMIT 1;
    d_known := FOUND AND d.period_end > p_at;
    IF NOT d_known THEN
        b := usage_period_bounds(p_tz, p_anchor, 'day', p_at);
        SELECT t.period_start, t.period_end, 0::bigint AS requests, 0::bigint AS messages, 0::bigint AS tokens, 0::bigint AS bytes, 0::numeric AS cost INTO d
          FROM usage_period_between(b.period_start, b.period_end, d.period_end, NULL) t;
    END IF;
    SELECT up.period_start, up.period_end, up.requests, up.messages, up.tokens, up.bytes, up.cost INTO m
      FROM usage_periods up
     WHERE up.user_id = p_user_id AND up.org_id = p_org_id AND up.period = 'month'
       AND up.period_start <= p_at
     ORDER BY up.period_start DESC
     LIMIT 1;
    m_known := FOUND AND m.period_end > p_at;
    IF NOT m_known THEN
        b := usage_period_bounds(p_tz, p_anchor, 'month', p_at);
        SELECT t.period_start, t.period_end, 0::bigint AS requests, 0::bigint AS messages, 0::bigint AS tokens, 0::bigint AS bytes, 0::numeric AS cost INTO m
          FROM usage_period_between(b.period_start, b.period_end, m.period_end, NULL) t;
    END IF;
    -- One statement for both period kinds: the five totals over all kinds, then one row per
    -- kind-scoped limit; each the counted total plus the pending events of its period.
    RETURN QUERY
    WITH per (period, known, p_from, p_to, requests, messages, tokens, bytes, cost) AS (
        VALUES ('day', d_known, d.period_start, d.period_end, d.requests::numeric, d.messages::numeric,
                d.tokens::numeric, d.bytes::numeric, d.cost),
               ('month', m_known, m.period_start, m.period_end, m.requests::numeric, m.messages::numeric,
                m.tokens::numeric, m.bytes::numeric, m.cost)
    ), pending AS MATERIALIZED (
        SELECT p.period, e.kind, count(*)::numeric AS requests, sum(e.messages)::numeric AS messages,
               sum(e.tokens)::numeric AS tokens, sum(e.bytes)::numeric AS bytes, sum(e.cost) AS cost
          FROM usage_subject_pending(p_user_id, p_org_id, LEAST(d.period_start, m.period_start),
                                     GREATEST(d.period_end, m.period_end)) e
          JOIN per p ON e.created_at >= p.p_from AND e.created_at < p.p_to
         GROUP BY p.period, e.kind
    ), pending_all AS (
        SELECT p.period, p.known, p.p_from, p.p_to,
               p.requests + COALESCE(sum(pe.requests), 0) AS requests,
               p.messages + COALESCE(sum(pe.messages), 0) AS messages,
               p.tokens + COALESCE(sum(pe.tokens), 0) AS tokens,
               p.bytes + COALESCE(sum(pe.bytes), 0) AS bytes,
               p.cost + COALESCE(sum(pe.cost), 0) AS cost
          FROM per p LEFT JOIN pending pe ON pe.period = p.period
         GROUP BY p.period, p.known, p.p_from, p.p_to, p.requests, p.messages, p.tokens, p.bytes, p.cost
    )
    SELECT x.metric, x.period, x.kind, x.used, x.limit_value,
           CASE WHEN x.limit_value IS NOT NULL
                THEN GREATEST(x.limit_value - x.used, 0) + COALESCE(gb.balance, 0) END,
           x.limit_value IS NULL,
           COALESCE(x.used >= x.limit_value AND COALESCE(gb.balance, 0) <= 0, false),
           CASE WHEN x.limit_value IS NULL THEN NULL
                WHEN x.limit_value = 0 THEN 100::numeric
                ELSE round(x.used * 100 / x.limit_value, 2) END,
           x.p_from, x.p_to, x.enforcement,
           COALESCE(gb.granted, 0), COALESCE(gb.balance, 0),
           usage_projected_exhaustion(x.used, x.limit_value, x.p_from, x.p_to, p_at)
      FROM (SELECT pa.period, pa.p_from, pa.p_to, mt.metric, ''::text AS kind, mt.used,
                   l.max_value AS limit_value, l.enforcement
              FROM pending_all pa
             CROSS JOIN LATERAL (VALUES ('bytes', pa.bytes), ('cost', pa.cost),
                                        ('messages', pa.messages), ('requests', pa.requests),
                                        ('tokens', pa.tokens)) AS mt (metric, used)
              LEFT JOIN plan_limits l
                ON l.plan_id = p_plan AND l.period = pa.period AND l.kind = '' AND l.metric = mt.metric
            UNION ALL
            SELECT p.period, p.p_from, p.p_to, l.metric, l.kind,
                   COALESCE(CASE l.metric WHEN 'requests' THEN k.requests::numeric
                                          WHEN 'messages' THEN k.messages::numeric
                                          WHEN 'tokens' THEN k.tokens::numeric
                                          WHEN 'bytes' THEN k.bytes::numeric
                                          ELSE k.cost END, 0)
                   + COALESCE(CASE l.metric WHEN 'requests' THEN pk.requests
                                            WHEN 'messages' THEN pk.messages
                                            WHEN 'tokens' THEN pk.tokens
                                            WHEN 'bytes' THEN pk.bytes
                                            ELSE pk.cost END, 0),
                   l.max_value, l.enforcement
              FROM per p
              JOIN plan_limits l ON l.plan_id = p_plan AND l.period = p.period AND l.kind <> ''
              LEFT JOIN usage_period_kind_totals k
                ON p.known AND k.user_id = p_user_id AND k.org_id = p_org_id AND k.period = p.period
               AND k.period_start = p.p_from AND k.kind = l.kind
              LEFT JOIN pending pk ON pk.period = p.period AND pk.kind = l.kind) AS x
      -- Only for a limit the subject has grants on: the others pay one index probe per call.
      LEFT JOIN LATERAL (SELECT b.granted, b.balance
                           FROM usage_grant_balance(p_user_id, p_org_id, x.metric, x.period, x.kind, p_at) b
                          WHERE x.metric || '/' || x.period || '/' || x.kind = ANY (grant_keys)) gb ON true
     ORDER BY x.period, x.metric, x.kind;
END;
$$;


--
-- Name: usage_subject_summary(bigint, bigint, text, date, date); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_subject_summary(p_user_id bigint, p_org_id bigint, p_granularity text, p_from date, p_to date) RETURNS TABLE(period_start date, events bigint, tokens bigint, prompt_tokens bigint, completion_tokens bigint, messages bigint, bytes bigint, cost numeric)
    LANGUAGE plpgsql STABLE
    AS $$
BEGIN
    PERFORM usage_summary_check_granularity(p_granularity);
    RETURN QUERY
    SELECT date_trunc(p_granularity, d.day::timestamp)::date,
           sum(d.events)::bigint, sum(d.tokens)::bigint, sum(d.prompt_tokens)::bigint,
           sum(d.completion_tokens)::bigint, sum(d.messages)::bigint, sum(d.bytes)::bigint,
           sum(d.cost)
      FROM usage_subject_days(p_user_id, p_org_id, p_from, p_to) d
     GROUP BY 1
     ORDER BY 1;
END;
$$;


--
-- Name: usage_summary(bigint, text, date, date); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_summary(p_user_id bigint, p_granularity text, p_from date, p_to date) RETURNS TABLE(period_start date, events bigint, tokens bigint, prompt_tokens bigint, completion_tokens bigint, messages bigint, bytes bigint, cost numeric)
    LANGUAGE sql STABLE
    SET search_path TO 'usage', 'pg_temp'
    AS $$
    SELECT * FROM usage_subject_summary(p_user_id, 0, p_granularity, p_from, p_to)
$$;


--
-- Name: usage_summary_check_granularity(text); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_summary_check_granularity(p_granularity text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    AS $$
BEGIN
    IF p_granularity IS NULL OR p_granularity NOT IN ('day', 'week', 'month', 'year') THEN
        RAISE EXCEPTION 'unknown granularity "%"; expected day, week, month or year', p_granularity
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
END;
$$;


--
-- Name: usage_timezone_is_valid(text); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_timezone_is_valid(tz text) RETURNS boolean
    LANGUAGE plpgsql STABLE
    AS $$
BEGIN
    IF tz IS NULL OR tz = '' THEN
        RETURN false;
    END IF;
    IF tz = 'UTC' THEN
        RETURN true;
    END IF;
    PERFORM now() AT TIME ZONE tz;
    RETURN true;
EXCEPTION WHEN invalid_parameter_value THEN
    RETURN false;
END;
$$;


--
-- Name: usage_timezone_or_utc(text); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_timezone_or_utc(tz text) RETURNS text
    LANGUAGE plpgsql STABLE
    AS $$
BEGIN
    IF tz IS NULL OR tz = '' THEN
        RETURN 'UTC';
    END IF;
    PERFORM now() AT TIME ZONE tz;
    RETURN tz;
EXCEPTION WHEN invalid_parameter_value THEN
    RETURN 'UTC';
END;
$$;


--
-- Name: usage_unsubscribe(text); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_unsubscribe(p_token text) RETURNS TABLE(user_id bigint, unsubscribed text, alert_emails text)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'usage', 'pg_temp'
    AS $_$
#variable_conflict use_column
DECLARE
    v_parts   text[];
    v_user    bigint;
    v_scope   text;
    v_expires bigint;
    v_key     bytea;
BEGIN
    v_parts := regexp_match(COALESCE(p_token, ''),
        '^u1\.([0-9]{1,18})\.(all|quota|credit)\.([0-9]{1,12})\.([0-9a-f]{16})\.([0-9a-f]{64})$');
    IF v_parts IS NULL THEN
        RAISE EXCEPTION 'usage_unsubscribe: not an unsubscribe token; nothing changed'
              USING ERRCODE = '22023',
                    HINT = 'pass the token query parameter of the List-Unsubscribe link as it is';
    END IF;
    v_user := v_parts[1]::bigint;
    v_scope := v_parts[2];
    v_expires := v_parts[3]::bigint;
    SELECT k.signing_key INTO v_key FROM usage_unsubscribe_keys k WHERE k.key_id = v_parts[4];
    IF NOT FOUND THEN
        RAISE EXCEPTION 'usage_unsubscribe: the token was signed by another installation (key % is unknown here); nothing changed', v_parts[4]
              USING ERRCODE = '22023',
                    HINT = 'only tokens from this installation''s alert emails are accepted';
    END IF;
    IF encode(usage_hmac_sha256(v_key, convert_to(left(p_token, length(p_token) - 65), 'UTF8')), 'hex')
       <> v_parts[5] THEN
        RAISE EXCEPTION 'usage_unsubscribe: the token''s signature does not match: it was altered; nothing changed'
              USING ERRCODE = '22023',
                    HINT = 'pass the token query parameter of the List-Unsubscribe link as it is';
    END IF;
    IF v_expires < extract(epoch FROM now()) THEN
        RAISE EXCEPTION 'usage_unsubscribe: the token of user % expired at %; nothing changed',
              v_user, to_timestamp(v_expires)
              USING ERRCODE = '22023',
                    HINT = 'a newer alert email carries a fresh token; preferences can also be changed with usage_set_alert_emails()';
    END IF;
    RETURN QUERY
    UPDATE users u
       SET alert_emails = CASE WHEN v_scope = 'all' OR u.alert_emails IN ('none', v_scope) THEN 'none'
                               WHEN u.alert_emails = 'all'
                               THEN CASE v_scope WHEN 'quota' THEN 'credit' ELSE 'quota' END
                               ELSE u.alert_emails END
     WHERE u.id = v_user
    RETURNING u.id, v_scope, u.alert_emails;
END;
$_$;


--
-- Name: usage_void_grant(bigint, text); Type: FUNCTION; Schema: usage; Owner: -
--

CREATE FUNCTION usage.usage_void_grant(p_grant_id bigint, p_reason text DEFAULT ''::text) RETURNS timestamp with time zone
    LANGUAGE plpgsql
    SET search_path TO 'usage', 'pg_temp'
    AS $$
DECLARE
    g record;
BEGIN
    SELECT * INTO g FROM usage_grants WHERE id = p_grant_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'usage_void_grant: grant % does not exist', COALESCE(p_grant_id::text, 'NULL')
              USING ERRCODE = '22023';
    END IF;
    IF g.voided_at IS NOT NULL THEN
        RAISE EXCEPTION 'usage_void_grant: grant % was voided already, at % by %', p_grant_id, g.voided_at, g.voided_by
              USING ERRCODE = '22023', HINT = 'a grant is voided once; nothing was changed';
    END IF;
    UPDATE usage_grants
       SET voided_at = now(), voided_by = session_user, void_reason = COALESCE(p_reason, ''),
           settled = false
     WHERE id = p_grant_id;
    RETURN now();
END;
$$;


--
-- Name: __diesel_schema_migrations; Type: TABLE; Schema: usage; Owner: -
--

CREATE TABLE usage.__diesel_schema_migrations (
    version character varying(50) NOT NULL,
    run_on timestamp without time zone DEFAULT CURRENT_TIMESTAMP NOT NULL
);


--
-- Name: aggregation_watermark; Type: TABLE; Schema: usage; Owner: -
--

CREATE TABLE usage.aggregation_watermark (
    id boolean DEFAULT true NOT NULL,
    xid xid8 DEFAULT '0'::xid8 NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT aggregation_watermark_id_check CHECK (id)
);


--
-- Name: job_runs; Type: TABLE; Schema: usage; Owner: -
--

CREATE TABLE usage.job_runs (
    id bigint NOT NULL,
    job text NOT NULL,
    trigger text NOT NULL,
    scheduled_for timestamp with time zone NOT NULL,
    started_at timestamp with time zone DEFAULT now() NOT NULL,
    finished_at timestamp with time zone,
    status text NOT NULL,
    report jsonb,
    error text,
    host text NOT NULL,
    pid integer NOT NULL,
    user_id bigint,
    CONSTRAINT job_runs_status_check CHECK ((status = ANY (ARRAY['running'::text, 'succeeded'::text, 'failed'::text, 'abandoned'::text, 'skipped'::text]))),
    CONSTRAINT job_runs_trigger_check CHECK ((trigger = ANY (ARRAY['cron'::text, 'catchup'::text, 'manual'::text])))
);


--
-- Name: job_runs_id_seq; Type: SEQUENCE; Schema: usage; Owner: -
--

CREATE SEQUENCE usage.job_runs_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: job_runs_id_seq; Type: SEQUENCE OWNED BY; Schema: usage; Owner: -
--

ALTER SEQUENCE usage.job_runs_id_seq OWNED BY usage.job_runs.id;


--
-- Name: organization_members; Type: TABLE; Schema: usage; Owner: -
--

CREATE TABLE usage.organization_members (
    org_id bigint NOT NULL,
    user_id bigint NOT NULL,
    role text DEFAULT 'member'::text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT organization_members_role_check CHECK ((role = ANY (ARRAY['owner'::text, 'admin'::text, 'member'::text])))
);


--
-- Name: organizations; Type: TABLE; Schema: usage; Owner: -
--

CREATE TABLE usage.organizations (
    id bigint NOT NULL,
    name text DEFAULT ''::text NOT NULL,
    timezone text DEFAULT 'UTC'::text NOT NULL,
    plan_id bigint,
    billing_anchor_day smallint,
    alerts_enabled boolean DEFAULT true NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT organizations_billing_anchor_day_check CHECK (((billing_anchor_day >= 1) AND (billing_anchor_day <= 31))),
    CONSTRAINT organizations_id_positive CHECK ((id > 0))
);


--
-- Name: plan_limits; Type: TABLE; Schema: usage; Owner: -
--

CREATE TABLE usage.plan_limits (
    plan_id bigint NOT NULL,
    metric text NOT NULL,
    period text NOT NULL,
    kind text DEFAULT ''::text NOT NULL,
    max_value numeric NOT NULL,
    enforcement text DEFAULT 'soft'::text NOT NULL,
    CONSTRAINT plan_limits_enforcement_check CHECK ((enforcement = ANY (ARRAY['soft'::text, 'hard'::text]))),
    CONSTRAINT plan_limits_kind_check CHECK (((kind = ''::text) OR (kind ~ '^[a-z][a-z0-9_]{0,63}$'::text))),
    CONSTRAINT plan_limits_max_value_finite CHECK ((max_value <> ALL (ARRAY['NaN'::numeric, 'Infinity'::numeric]))),
    CONSTRAINT plan_limits_max_value_not_negative CHECK ((max_value >= (0)::numeric)),
    CONSTRAINT plan_limits_metric_check CHECK ((metric = ANY (ARRAY['requests'::text, 'messages'::text, 'tokens'::text, 'bytes'::text, 'cost'::text]))),
    CONSTRAINT plan_limits_period_check CHECK ((period = ANY (ARRAY['day'::text, 'month'::text])))
);


--
-- Name: plans; Type: TABLE; Schema: usage; Owner: -
--

CREATE TABLE usage.plans (
    id bigint NOT NULL,
    name text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    alert_thresholds smallint[],
    CONSTRAINT plans_alert_thresholds_check CHECK (((alert_thresholds IS NULL) OR ((cardinality(alert_thresholds) > 0) AND (array_position(alert_thresholds, NULL::smallint) IS NULL) AND (1 <= ALL (alert_thresholds)) AND (100 >= ALL (alert_thresholds))))),
    CONSTRAINT plans_name_check CHECK ((name <> ''::text))
);


--
-- Name: plans_id_seq; Type: SEQUENCE; Schema: usage; Owner: -
--

CREATE SEQUENCE usage.plans_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: plans_id_seq; Type: SEQUENCE OWNED BY; Schema: usage; Owner: -
--

ALTER SEQUENCE usage.plans_id_seq OWNED BY usage.plans.id;


--
-- Name: prices; Type: TABLE; Schema: usage; Owner: -
--

CREATE TABLE usage.prices (
    kind text NOT NULL,
    model text DEFAULT ''::text NOT NULL,
    valid_from timestamp with time zone DEFAULT '-infinity'::timestamp with time zone NOT NULL,
    per_event numeric DEFAULT 0 NOT NULL,
    per_1k_prompt_tokens numeric DEFAULT 0 NOT NULL,
    per_1k_completion_tokens numeric DEFAULT 0 NOT NULL,
    per_1k_tokens numeric DEFAULT 0 NOT NULL,
    per_mb numeric DEFAULT 0 NOT NULL,
    CONSTRAINT prices_finite CHECK (((per_event <> ALL (ARRAY['NaN'::numeric, 'Infinity'::numeric])) AND (per_1k_prompt_tokens <> ALL (ARRAY['NaN'::numeric, 'Infinity'::numeric])) AND (per_1k_completion_tokens <> ALL (ARRAY['NaN'::numeric, 'Infinity'::numeric])) AND (per_1k_tokens <> ALL (ARRAY['NaN'::numeric, 'Infinity'::numeric])) AND (per_mb <> ALL (ARRAY['NaN'::numeric, 'Infinity'::numeric])))),
    CONSTRAINT prices_kind_check CHECK ((kind ~ '^[a-z][a-z0-9_]{0,63}$'::text)),
    CONSTRAINT prices_per_1k_completion_tokens_check CHECK ((per_1k_completion_tokens >= (0)::numeric)),
    CONSTRAINT prices_per_1k_prompt_tokens_check CHECK ((per_1k_prompt_tokens >= (0)::numeric)),
    CONSTRAINT prices_per_1k_tokens_check CHECK ((per_1k_tokens >= (0)::numeric)),
    CONSTRAINT prices_per_event_check CHECK ((per_event >= (0)::numeric)),
    CONSTRAINT prices_per_mb_check CHECK ((per_mb >= (0)::numeric))
);


--
-- Name: quota_alerts; Type: TABLE; Schema: usage; Owner: -
--

CREATE TABLE usage.quota_alerts (
    id bigint NOT NULL,
    user_id bigint NOT NULL,
    metric text NOT NULL,
    period text NOT NULL,
    kind text DEFAULT ''::text NOT NULL,
    period_start timestamp with time zone NOT NULL,
    period_end timestamp with time zone NOT NULL,
    threshold smallint NOT NULL,
    used_value numeric NOT NULL,
    limit_value numeric NOT NULL,
    status text DEFAULT 'pending'::text NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    next_attempt_at timestamp with time zone NOT NULL,
    leased_until timestamp with time zone,
    last_error text,
    error_class text,
    message_id text,
    decided_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    org_id bigint DEFAULT 0 NOT NULL,
    alert text DEFAULT 'quota'::text NOT NULL,
    grant_id bigint DEFAULT 0 NOT NULL,
    projected_exhaustion timestamp with time zone,
    CONSTRAINT quota_alerts_alert_check CHECK ((alert = ANY (ARRAY['quota'::text, 'quota.forecast'::text, 'credit.low'::text, 'credit.depleted'::text, 'credit.recovered'::text]))),
    CONSTRAINT quota_alerts_attempts_not_negative CHECK ((attempts >= 0)),
    CONSTRAINT quota_alerts_metric_check CHECK ((metric = ANY (ARRAY['requests'::text, 'messages'::text, 'tokens'::text, 'bytes'::text, 'cost'::text]))),
    CONSTRAINT quota_alerts_org_id_check CHECK ((org_id >= 0)),
    CONSTRAINT quota_alerts_period_check CHECK ((period = ANY (ARRAY['day'::text, 'month'::text]))),
    CONSTRAINT quota_alerts_sending_has_lease CHECK (((status = 'sending'::text) = (leased_until IS NOT NULL))),
    CONSTRAINT quota_alerts_sent_has_message_id CHECK (((status <> 'sent'::text) OR (message_id IS NOT NULL))),
    CONSTRAINT quota_alerts_status_check CHECK ((status = ANY (ARRAY['pending'::text, 'sending'::text, 'sent'::text, 'failed'::text, 'suppressed'::text, 'superseded'::text, 'expired'::text, 'unsubscribed'::text]))),
    CONSTRAINT quota_alerts_threshold_check CHECK (((threshold >= 1) AND (threshold <= 100)))
);


--
-- Name: quota_alerts_id_seq; Type: SEQUENCE; Schema: usage; Owner: -
--

CREATE SEQUENCE usage.quota_alerts_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: quota_alerts_id_seq; Type: SEQUENCE OWNED BY; Schema: usage; Owner: -
--

ALTER SEQUENCE usage.quota_alerts_id_seq OWNED BY usage.quota_alerts.id;


--
-- Name: usage_events_id_seq; Type: SEQUENCE; Schema: usage; Owner: -
--

CREATE SEQUENCE usage.usage_events_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: usage_events_id_seq; Type: SEQUENCE OWNED BY; Schema: usage; Owner: -
--

ALTER SEQUENCE usage.usage_events_id_seq OWNED BY usage.usage_events.id;


--
-- Name: usage_events_default; Type: TABLE; Schema: usage; Owner: -
--

CREATE TABLE usage.usage_events_default (
    id bigint DEFAULT nextval('usage.usage_events_id_seq'::regclass) NOT NULL,
    user_id bigint NOT NULL,
    kind text NOT NULL,
    request_type text DEFAULT ''::text NOT NULL,
    model text DEFAULT ''::text NOT NULL,
    tokens bigint DEFAULT 0 NOT NULL,
    prompt_tokens bigint DEFAULT 0 NOT NULL,
    completion_tokens bigint DEFAULT 0 NOT NULL,
    messages integer DEFAULT 0 NOT NULL,
    bytes bigint DEFAULT 0 NOT NULL,
    cost numeric(20,8) DEFAULT 0 NOT NULL,
    metadata jsonb DEFAULT '{}'::jsonb NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    recorded_xid xid8 DEFAULT pg_current_xact_id() NOT NULL,
    org_id bigint,
    CONSTRAINT usage_events_bytes_not_negative CHECK ((bytes >= 0)),
    CONSTRAINT usage_events_completion_tokens_not_negative CHECK ((completion_tokens >= 0)),
    CONSTRAINT usage_events_cost_not_negative CHECK ((cost >= (0)::numeric)),
    CONSTRAINT usage_events_kind_check CHECK ((kind ~ '^[a-z][a-z0-9_]{0,63}$'::text)),
    CONSTRAINT usage_events_messages_not_negative CHECK ((messages >= 0)),
    CONSTRAINT usage_events_metadata_size CHECK ((octet_length((metadata)::text) <= 65536)),
    CONSTRAINT usage_events_model_check CHECK ((length(model) <= 200)),
    CONSTRAINT usage_events_org_id_check CHECK ((org_id > 0)),
    CONSTRAINT usage_events_prompt_tokens_not_negative CHECK ((prompt_tokens >= 0)),
    CONSTRAINT usage_events_request_type_check CHECK ((request_type ~ '^([a-z0-9][a-z0-9_.-]{0,63})?$'::text)),
    CONSTRAINT usage_events_tokens_not_negative CHECK ((tokens >= 0))
);


--
-- Name: usage_grant_draws; Type: TABLE; Schema: usage; Owner: -
--

CREATE TABLE usage.usage_grant_draws (
    grant_id bigint NOT NULL,
    period_start timestamp with time zone NOT NULL,
    period_end timestamp with time zone NOT NULL,
    drawn numeric NOT NULL,
    recorded_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT usage_grant_draws_drawn_check CHECK ((drawn > (0)::numeric))
);


--
-- Name: usage_grant_marks; Type: TABLE; Schema: usage; Owner: -
--

CREATE TABLE usage.usage_grant_marks (
    user_id bigint NOT NULL,
    org_id bigint NOT NULL,
    period text NOT NULL,
    kind text NOT NULL,
    at timestamp with time zone NOT NULL,
    since timestamp with time zone NOT NULL,
    requests bigint DEFAULT 0 NOT NULL,
    messages bigint DEFAULT 0 NOT NULL,
    tokens bigint DEFAULT 0 NOT NULL,
    bytes bigint DEFAULT 0 NOT NULL,
    cost numeric DEFAULT 0 NOT NULL
);


--
-- Name: usage_grants; Type: TABLE; Schema: usage; Owner: -
--

CREATE TABLE usage.usage_grants (
    id bigint NOT NULL,
    user_id bigint DEFAULT 0 NOT NULL,
    org_id bigint DEFAULT 0 NOT NULL,
    metric text NOT NULL,
    period text NOT NULL,
    kind text DEFAULT ''::text NOT NULL,
    amount numeric NOT NULL,
    starts_at timestamp with time zone NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    reason text DEFAULT ''::text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    created_by text DEFAULT SESSION_USER NOT NULL,
    voided_at timestamp with time zone,
    voided_by text,
    void_reason text,
    settled boolean DEFAULT false NOT NULL,
    CONSTRAINT usage_grants_amount_check CHECK (((amount > (0)::numeric) AND (amount < 'Infinity'::numeric))),
    CONSTRAINT usage_grants_bounds_check CHECK (((expires_at > starts_at) AND isfinite(starts_at) AND isfinite(expires_at))),
    CONSTRAINT usage_grants_kind_check CHECK ((kind ~ '^([a-z][a-z0-9_]{0,63})?$'::text)),
    CONSTRAINT usage_grants_metric_check CHECK ((metric = ANY (ARRAY['requests'::text, 'messages'::text, 'tokens'::text, 'bytes'::text, 'cost'::text]))),
    CONSTRAINT usage_grants_period_check CHECK ((period = ANY (ARRAY['day'::text, 'month'::text]))),
    CONSTRAINT usage_grants_subject_check CHECK (((org_id >= 0) AND ((org_id = 0) OR (user_id = 0)))),
    CONSTRAINT usage_grants_voided_check CHECK (((voided_at IS NULL) = (voided_by IS NULL)))
);


--
-- Name: usage_grants_id_seq; Type: SEQUENCE; Schema: usage; Owner: -
--

CREATE SEQUENCE usage.usage_grants_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: usage_grants_id_seq; Type: SEQUENCE OWNED BY; Schema: usage; Owner: -
--

ALTER SEQUENCE usage.usage_grants_id_seq OWNED BY usage.usage_grants.id;


--
-- Name: usage_idempotency_keys; Type: TABLE; Schema: usage; Owner: -
--

CREATE TABLE usage.usage_idempotency_keys (
    org_id bigint DEFAULT 0 NOT NULL,
    user_id bigint NOT NULL,
    scope_user_id bigint GENERATED ALWAYS AS (
CASE
    WHEN (org_id = 0) THEN user_id
    ELSE (0)::bigint
END) STORED NOT NULL,
    idempotency_key text NOT NULL,
    event_id bigint NOT NULL,
    event_created_at timestamp with time zone NOT NULL,
    recorded_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT usage_idempotency_keys_key_check CHECK (((length(idempotency_key) >= 1) AND (length(idempotency_key) <= 255))),
    CONSTRAINT usage_idempotency_keys_org_id_check CHECK ((org_id >= 0))
);


--
-- Name: usage_period_kind_totals; Type: TABLE; Schema: usage; Owner: -
--

CREATE TABLE usage.usage_period_kind_totals (
    user_id bigint NOT NULL,
    period text NOT NULL,
    period_start timestamp with time zone NOT NULL,
    kind text NOT NULL,
    requests bigint DEFAULT 0 NOT NULL,
    messages bigint DEFAULT 0 NOT NULL,
    tokens bigint DEFAULT 0 NOT NULL,
    bytes bigint DEFAULT 0 NOT NULL,
    cost numeric DEFAULT 0 NOT NULL,
    org_id bigint DEFAULT 0 NOT NULL
)
WITH (fillfactor='70');


--
-- Name: usage_periods; Type: TABLE; Schema: usage; Owner: -
--

CREATE TABLE usage.usage_periods (
    user_id bigint NOT NULL,
    period text NOT NULL,
    period_start timestamp with time zone NOT NULL,
    period_end timestamp with time zone NOT NULL,
    status text DEFAULT 'open'::text NOT NULL,
    close_reason text,
    requests bigint DEFAULT 0 NOT NULL,
    messages bigint DEFAULT 0 NOT NULL,
    tokens bigint DEFAULT 0 NOT NULL,
    bytes bigint DEFAULT 0 NOT NULL,
    cost numeric DEFAULT 0 NOT NULL,
    opened_at timestamp with time zone DEFAULT now() NOT NULL,
    closed_at timestamp with time zone,
    plan_id bigint,
    limits jsonb,
    org_id bigint DEFAULT 0 NOT NULL,
    CONSTRAINT usage_periods_bounds_check CHECK ((period_end > period_start)),
    CONSTRAINT usage_periods_close_reason_check CHECK ((close_reason = ANY (ARRAY['rollover'::text, 'manual'::text]))),
    CONSTRAINT usage_periods_closed_has_reason CHECK (((status = 'closed'::text) = (close_reason IS NOT NULL))),
    CONSTRAINT usage_periods_period_check CHECK ((period = ANY (ARRAY['day'::text, 'month'::text]))),
    CONSTRAINT usage_periods_status_check CHECK ((status = ANY (ARRAY['open'::text, 'closed'::text]))),
    CONSTRAINT usage_periods_subject_check CHECK (((org_id >= 0) AND ((org_id = 0) OR (user_id = 0))))
)
WITH (fillfactor='70');


--
-- Name: usage_quarantine; Type: TABLE; Schema: usage; Owner: -
--

CREATE TABLE usage.usage_quarantine (
    event_id bigint NOT NULL,
    created_at timestamp with time zone NOT NULL,
    user_id bigint NOT NULL,
    recorded_xid xid8 NOT NULL,
    reason text NOT NULL,
    detail text NOT NULL,
    quarantined_at timestamp with time zone DEFAULT now() NOT NULL,
    org_id bigint,
    CONSTRAINT usage_quarantine_reason_check CHECK ((reason = ANY (ARRAY['created_at_out_of_range'::text, 'cost_not_a_number'::text, 'daily_sum_overflow'::text, 'period_sum_overflow'::text])))
);


--
-- Name: usage_settings; Type: TABLE; Schema: usage; Owner: -
--

CREATE TABLE usage.usage_settings (
    singleton boolean DEFAULT true NOT NULL,
    idempotency_days integer DEFAULT 7 NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT usage_settings_idempotency_days_check CHECK (((idempotency_days >= 1) AND (idempotency_days <= 3650))),
    CONSTRAINT usage_settings_singleton CHECK (singleton)
);


--
-- Name: users; Type: TABLE; Schema: usage; Owner: -
--

CREATE TABLE usage.users (
    id bigint NOT NULL,
    email text NOT NULL,
    name text DEFAULT ''::text NOT NULL,
    timezone text DEFAULT 'UTC'::text NOT NULL,
    plan_id bigint,
    billing_anchor_day smallint,
    alerts_enabled boolean DEFAULT true NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    alert_emails text DEFAULT 'all'::text NOT NULL,
    CONSTRAINT users_alert_emails_check CHECK ((alert_emails = ANY (ARRAY['all'::text, 'quota'::text, 'credit'::text, 'none'::text]))),
    CONSTRAINT users_billing_anchor_day_check CHECK (((billing_anchor_day >= 1) AND (billing_anchor_day <= 31)))
);


--
-- Name: usage_subjects; Type: VIEW; Schema: usage; Owner: -
--

CREATE VIEW usage.usage_subjects WITH (security_invoker='true') AS
 SELECT u.id AS user_id,
    (0)::bigint AS org_id,
    u.name,
    u.email,
    u.timezone,
    u.billing_anchor_day,
    u.plan_id,
    u.alerts_enabled,
    u.alert_emails
   FROM usage.users u
UNION ALL
 SELECT (0)::bigint AS user_id,
    o.id AS org_id,
    o.name,
    NULL::text AS email,
    o.timezone,
    o.billing_anchor_day,
    o.plan_id,
    o.alerts_enabled,
    'all'::text AS alert_emails
   FROM usage.organizations o;


--
-- Name: usage_unsubscribe_keys; Type: TABLE; Schema: usage; Owner: -
--

CREATE TABLE usage.usage_unsubscribe_keys (
    key_id text NOT NULL,
    signing_key bytea NOT NULL,
    registered_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT usage_unsubscribe_keys_key_id_check CHECK ((key_id ~ '^[0-9a-f]{16}$'::text)),
    CONSTRAINT usage_unsubscribe_keys_signing_key_check CHECK ((length(signing_key) = 32))
);


--
-- Name: webhook_deliveries; Type: TABLE; Schema: usage; Owner: -
--

CREATE TABLE usage.webhook_deliveries (
    id bigint NOT NULL,
    alert_id bigint NOT NULL,
    endpoint_id bigint NOT NULL,
    event_type text NOT NULL,
    webhook_id text NOT NULL,
    status text DEFAULT 'pending'::text NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    next_attempt_at timestamp with time zone NOT NULL,
    leased_until timestamp with time zone,
    last_status_code smallint,
    error_class text,
    last_error text,
    delivered_at timestamp with time zone,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT webhook_deliveries_attempts_not_negative CHECK ((attempts >= 0)),
    CONSTRAINT webhook_deliveries_event_type_check CHECK ((event_type = ANY (ARRAY['quota.threshold'::text, 'quota.exhausted'::text, 'quota.forecast'::text, 'credit.low'::text, 'credit.depleted'::text, 'credit.recovered'::text]))),
    CONSTRAINT webhook_deliveries_sending_has_lease CHECK (((status = 'sending'::text) = (leased_until IS NOT NULL))),
    CONSTRAINT webhook_deliveries_status_check CHECK ((status = ANY (ARRAY['pending'::text, 'sending'::text, 'delivered'::text, 'failed'::text, 'expired'::text])))
);


--
-- Name: webhook_deliveries_id_seq; Type: SEQUENCE; Schema: usage; Owner: -
--

CREATE SEQUENCE usage.webhook_deliveries_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: webhook_deliveries_id_seq; Type: SEQUENCE OWNED BY; Schema: usage; Owner: -
--

ALTER SEQUENCE usage.webhook_deliveries_id_seq OWNED BY usage.webhook_deliveries.id;


--
-- Name: webhook_endpoints; Type: TABLE; Schema: usage; Owner: -
--

CREATE TABLE usage.webhook_endpoints (
    id bigint NOT NULL,
    endpoint_key text NOT NULL,
    host text NOT NULL,
    config_hash text NOT NULL,
    disabled_at timestamp with time zone,
    disabled_reason text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: webhook_endpoints_id_seq; Type: SEQUENCE; Schema: usage; Owner: -
--

CREATE SEQUENCE usage.webhook_endpoints_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: webhook_endpoints_id_seq; Type: SEQUENCE OWNED BY; Schema: usage; Owner: -
--

ALTER SEQUENCE usage.webhook_endpoints_id_seq OWNED BY usage.webhook_endpoints.id;


--
-- Name: usage_events_default; Type: TABLE ATTACH; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.usage_events ATTACH PARTITION usage.usage_events_default DEFAULT;


--
-- Name: job_runs id; Type: DEFAULT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.job_runs ALTER COLUMN id SET DEFAULT nextval('usage.job_runs_id_seq'::regclass);


--
-- Name: plans id; Type: DEFAULT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.plans ALTER COLUMN id SET DEFAULT nextval('usage.plans_id_seq'::regclass);


--
-- Name: quota_alerts id; Type: DEFAULT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.quota_alerts ALTER COLUMN id SET DEFAULT nextval('usage.quota_alerts_id_seq'::regclass);


--
-- Name: usage_events id; Type: DEFAULT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.usage_events ALTER COLUMN id SET DEFAULT nextval('usage.usage_events_id_seq'::regclass);


--
-- Name: usage_grants id; Type: DEFAULT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.usage_grants ALTER COLUMN id SET DEFAULT nextval('usage.usage_grants_id_seq'::regclass);


--
-- Name: webhook_deliveries id; Type: DEFAULT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.webhook_deliveries ALTER COLUMN id SET DEFAULT nextval('usage.webhook_deliveries_id_seq'::regclass);


--
-- Name: webhook_endpoints id; Type: DEFAULT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.webhook_endpoints ALTER COLUMN id SET DEFAULT nextval('usage.webhook_endpoints_id_seq'::regclass);


--
-- Name: __diesel_schema_migrations __diesel_schema_migrations_pkey; Type: CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.__diesel_schema_migrations
    ADD CONSTRAINT __diesel_schema_migrations_pkey PRIMARY KEY (version);


--
-- Name: aggregation_watermark aggregation_watermark_pkey; Type: CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.aggregation_watermark
    ADD CONSTRAINT aggregation_watermark_pkey PRIMARY KEY (id);


--
-- Name: job_runs job_runs_pkey; Type: CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.job_runs
    ADD CONSTRAINT job_runs_pkey PRIMARY KEY (id);


--
-- Name: organization_members organization_members_pkey; Type: CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.organization_members
    ADD CONSTRAINT organization_members_pkey PRIMARY KEY (org_id, user_id);


--
-- Name: organizations organizations_pkey; Type: CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.organizations
    ADD CONSTRAINT organizations_pkey PRIMARY KEY (id);


--
-- Name: plan_limits plan_limits_pkey; Type: CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.plan_limits
    ADD CONSTRAINT plan_limits_pkey PRIMARY KEY (plan_id, metric, period, kind);


--
-- Name: plans plans_name_key; Type: CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.plans
    ADD CONSTRAINT plans_name_key UNIQUE (name);


--
-- Name: plans plans_pkey; Type: CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.plans
    ADD CONSTRAINT plans_pkey PRIMARY KEY (id);


--
-- Name: prices prices_pkey; Type: CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.prices
    ADD CONSTRAINT prices_pkey PRIMARY KEY (kind, model, valid_from);


--
-- Name: quota_alerts quota_alerts_once; Type: CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.quota_alerts
    ADD CONSTRAINT quota_alerts_once UNIQUE (user_id, org_id, metric, period, kind, period_start, threshold, alert, grant_id);


--
-- Name: quota_alerts quota_alerts_pkey; Type: CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.quota_alerts
    ADD CONSTRAINT quota_alerts_pkey PRIMARY KEY (id);


--
-- Name: token_usage_daily token_usage_daily_pkey; Type: CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.token_usage_daily
    ADD CONSTRAINT token_usage_daily_pkey PRIMARY KEY (user_id, day, kind, request_type, model, org_key);


--
-- Name: usage_events usage_events_bytes_in_range; Type: CHECK CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE usage.usage_events
    ADD CONSTRAINT usage_events_bytes_in_range CHECK ((bytes <= '1000000000000'::bigint)) NOT VALID;


--
-- Name: usage_events usage_events_completion_tokens_in_range; Type: CHECK CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE usage.usage_events
    ADD CONSTRAINT usage_events_completion_tokens_in_range CHECK ((completion_tokens <= '1000000000000'::bigint)) NOT VALID;


--
-- Name: usage_events usage_events_cost_in_range; Type: CHECK CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE usage.usage_events
    ADD CONSTRAINT usage_events_cost_in_range CHECK ((cost <= (1000000000)::numeric)) NOT VALID;


--
-- Name: usage_events usage_events_created_at_in_range; Type: CHECK CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE usage.usage_events
    ADD CONSTRAINT usage_events_created_at_in_range CHECK (((created_at >= '1990-01-01 00:00:00+00'::timestamp with time zone) AND (created_at < '2200-01-01 00:00:00+00'::timestamp with time zone))) NOT VALID;


--
-- Name: usage_events usage_events_pkey; Type: CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.usage_events
    ADD CONSTRAINT usage_events_pkey PRIMARY KEY (id, created_at);


--
-- Name: usage_events_default usage_events_default_pkey; Type: CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.usage_events_default
    ADD CONSTRAINT usage_events_default_pkey PRIMARY KEY (id, created_at);


--
-- Name: usage_events usage_events_messages_in_range; Type: CHECK CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE usage.usage_events
    ADD CONSTRAINT usage_events_messages_in_range CHECK ((messages <= 1000000)) NOT VALID;


--
-- Name: usage_events usage_events_prompt_tokens_in_range; Type: CHECK CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE usage.usage_events
    ADD CONSTRAINT usage_events_prompt_tokens_in_range CHECK ((prompt_tokens <= '1000000000000'::bigint)) NOT VALID;


--
-- Name: usage_events usage_events_tokens_in_range; Type: CHECK CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE usage.usage_events
    ADD CONSTRAINT usage_events_tokens_in_range CHECK ((tokens <= '1000000000000'::bigint)) NOT VALID;


--
-- Name: usage_grant_draws usage_grant_draws_pkey; Type: CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.usage_grant_draws
    ADD CONSTRAINT usage_grant_draws_pkey PRIMARY KEY (grant_id, period_start);


--
-- Name: usage_grant_marks usage_grant_marks_pkey; Type: CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.usage_grant_marks
    ADD CONSTRAINT usage_grant_marks_pkey PRIMARY KEY (user_id, org_id, period, kind, at);


--
-- Name: usage_grants usage_grants_pkey; Type: CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.usage_grants
    ADD CONSTRAINT usage_grants_pkey PRIMARY KEY (id);


--
-- Name: usage_idempotency_keys usage_idempotency_keys_pkey; Type: CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.usage_idempotency_keys
    ADD CONSTRAINT usage_idempotency_keys_pkey PRIMARY KEY (org_id, scope_user_id, idempotency_key);


--
-- Name: usage_period_kind_totals usage_period_kind_totals_pkey; Type: CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.usage_period_kind_totals
    ADD CONSTRAINT usage_period_kind_totals_pkey PRIMARY KEY (user_id, org_id, period, period_start, kind);


--
-- Name: usage_periods usage_periods_pkey; Type: CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.usage_periods
    ADD CONSTRAINT usage_periods_pkey PRIMARY KEY (user_id, org_id, period, period_start);


--
-- Name: usage_quarantine usage_quarantine_pkey; Type: CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.usage_quarantine
    ADD CONSTRAINT usage_quarantine_pkey PRIMARY KEY (event_id, created_at);


--
-- Name: usage_settings usage_settings_pkey; Type: CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.usage_settings
    ADD CONSTRAINT usage_settings_pkey PRIMARY KEY (singleton);


--
-- Name: usage_unsubscribe_keys usage_unsubscribe_keys_pkey; Type: CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.usage_unsubscribe_keys
    ADD CONSTRAINT usage_unsubscribe_keys_pkey PRIMARY KEY (key_id);


--
-- Name: users users_pkey; Type: CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.users
    ADD CONSTRAINT users_pkey PRIMARY KEY (id);


--
-- Name: webhook_deliveries webhook_deliveries_once; Type: CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.webhook_deliveries
    ADD CONSTRAINT webhook_deliveries_once UNIQUE (alert_id, endpoint_id);


--
-- Name: webhook_deliveries webhook_deliveries_pkey; Type: CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.webhook_deliveries
    ADD CONSTRAINT webhook_deliveries_pkey PRIMARY KEY (id);


--
-- Name: webhook_deliveries webhook_deliveries_webhook_id_unique; Type: CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.webhook_deliveries
    ADD CONSTRAINT webhook_deliveries_webhook_id_unique UNIQUE (webhook_id);


--
-- Name: webhook_endpoints webhook_endpoints_key_unique; Type: CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.webhook_endpoints
    ADD CONSTRAINT webhook_endpoints_key_unique UNIQUE (endpoint_key);


--
-- Name: webhook_endpoints webhook_endpoints_pkey; Type: CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.webhook_endpoints
    ADD CONSTRAINT webhook_endpoints_pkey PRIMARY KEY (id);


--
-- Name: job_runs_job_started_idx; Type: INDEX; Schema: usage; Owner: -
--

CREATE INDEX job_runs_job_started_idx ON usage.job_runs USING btree (job, started_at DESC);


--
-- Name: job_runs_one_run_per_tick; Type: INDEX; Schema: usage; Owner: -
--

CREATE UNIQUE INDEX job_runs_one_run_per_tick ON usage.job_runs USING btree (job, scheduled_for) WHERE ((trigger = ANY (ARRAY['cron'::text, 'catchup'::text])) AND (status <> ALL (ARRAY['abandoned'::text, 'skipped'::text])));


--
-- Name: job_runs_running_idx; Type: INDEX; Schema: usage; Owner: -
--

CREATE INDEX job_runs_running_idx ON usage.job_runs USING btree (job) WHERE (status = 'running'::text);


--
-- Name: job_runs_started_idx; Type: INDEX; Schema: usage; Owner: -
--

CREATE INDEX job_runs_started_idx ON usage.job_runs USING btree (started_at DESC, id DESC);


--
-- Name: organization_members_user_idx; Type: INDEX; Schema: usage; Owner: -
--

CREATE INDEX organization_members_user_idx ON usage.organization_members USING btree (user_id);


--
-- Name: organizations_plan_id_idx; Type: INDEX; Schema: usage; Owner: -
--

CREATE INDEX organizations_plan_id_idx ON usage.organizations USING btree (plan_id);


--
-- Name: quota_alerts_pending_due_idx; Type: INDEX; Schema: usage; Owner: -
--

CREATE INDEX quota_alerts_pending_due_idx ON usage.quota_alerts USING btree (next_attempt_at) WHERE (status = 'pending'::text);


--
-- Name: quota_alerts_sending_lease_idx; Type: INDEX; Schema: usage; Owner: -
--

CREATE INDEX quota_alerts_sending_lease_idx ON usage.quota_alerts USING btree (leased_until) WHERE (status = 'sending'::text);


--
-- Name: token_usage_daily_day_idx; Type: INDEX; Schema: usage; Owner: -
--

CREATE INDEX token_usage_daily_day_idx ON usage.token_usage_daily USING btree (day);


--
-- Name: token_usage_daily_org_day_idx; Type: INDEX; Schema: usage; Owner: -
--

CREATE INDEX token_usage_daily_org_day_idx ON usage.token_usage_daily USING btree (org_id, day) WHERE (org_id IS NOT NULL);


--
-- Name: usage_events_subject_xid_idx; Type: INDEX; Schema: usage; Owner: -
--

CREATE INDEX usage_events_subject_xid_idx ON ONLY usage.usage_events USING btree ((
CASE
    WHEN (org_id IS NULL) THEN user_id
    ELSE (0)::bigint
END), (
CASE
    WHEN (org_id IS NULL) THEN (0)::bigint
    ELSE org_id
END), recorded_xid);


--
-- Name: usage_events_default_case_org_id_recorded_xid_idx; Type: INDEX; Schema: usage; Owner: -
--

CREATE INDEX usage_events_default_case_org_id_recorded_xid_idx ON usage.usage_events_default USING btree ((
CASE
    WHEN (org_id IS NULL) THEN user_id
    ELSE (0)::bigint
END), (
CASE
    WHEN (org_id IS NULL) THEN (0)::bigint
    ELSE org_id
END), recorded_xid);


--
-- Name: usage_events_org_created_idx; Type: INDEX; Schema: usage; Owner: -
--

CREATE INDEX usage_events_org_created_idx ON ONLY usage.usage_events USING btree (org_id, created_at) WHERE (org_id IS NOT NULL);


--
-- Name: usage_events_default_org_id_created_at_idx; Type: INDEX; Schema: usage; Owner: -
--

CREATE INDEX usage_events_default_org_id_created_at_idx ON usage.usage_events_default USING btree (org_id, created_at) WHERE (org_id IS NOT NULL);


--
-- Name: usage_events_recorded_xid_idx; Type: INDEX; Schema: usage; Owner: -
--

CREATE INDEX usage_events_recorded_xid_idx ON ONLY usage.usage_events USING btree (recorded_xid);


--
-- Name: usage_events_default_recorded_xid_idx; Type: INDEX; Schema: usage; Owner: -
--

CREATE INDEX usage_events_default_recorded_xid_idx ON usage.usage_events_default USING btree (recorded_xid);


--
-- Name: usage_events_user_created_idx; Type: INDEX; Schema: usage; Owner: -
--

CREATE INDEX usage_events_user_created_idx ON ONLY usage.usage_events USING btree (user_id, created_at);


--
-- Name: usage_events_default_user_id_created_at_idx; Type: INDEX; Schema: usage; Owner: -
--

CREATE INDEX usage_events_default_user_id_created_at_idx ON usage.usage_events_default USING btree (user_id, created_at);


--
-- Name: usage_grants_subject_idx; Type: INDEX; Schema: usage; Owner: -
--

CREATE INDEX usage_grants_subject_idx ON usage.usage_grants USING btree (user_id, org_id, metric, period, kind);


--
-- Name: usage_grants_unsettled_idx; Type: INDEX; Schema: usage; Owner: -
--

CREATE INDEX usage_grants_unsettled_idx ON usage.usage_grants USING btree (user_id, org_id) WHERE (NOT settled);


--
-- Name: usage_idempotency_keys_recorded_idx; Type: INDEX; Schema: usage; Owner: -
--

CREATE INDEX usage_idempotency_keys_recorded_idx ON usage.usage_idempotency_keys USING btree (recorded_at);


--
-- Name: usage_periods_open_end_idx; Type: INDEX; Schema: usage; Owner: -
--

CREATE INDEX usage_periods_open_end_idx ON usage.usage_periods USING btree (period_end) WHERE (status = 'open'::text);


--
-- Name: usage_quarantine_user_idx; Type: INDEX; Schema: usage; Owner: -
--

CREATE INDEX usage_quarantine_user_idx ON usage.usage_quarantine USING btree (user_id, created_at);


--
-- Name: users_plan_id_idx; Type: INDEX; Schema: usage; Owner: -
--

CREATE INDEX users_plan_id_idx ON usage.users USING btree (plan_id);


--
-- Name: webhook_deliveries_endpoint_idx; Type: INDEX; Schema: usage; Owner: -
--

CREATE INDEX webhook_deliveries_endpoint_idx ON usage.webhook_deliveries USING btree (endpoint_id);


--
-- Name: webhook_deliveries_pending_due_idx; Type: INDEX; Schema: usage; Owner: -
--

CREATE INDEX webhook_deliveries_pending_due_idx ON usage.webhook_deliveries USING btree (next_attempt_at) WHERE (status = 'pending'::text);


--
-- Name: webhook_deliveries_sending_lease_idx; Type: INDEX; Schema: usage; Owner: -
--

CREATE INDEX webhook_deliveries_sending_lease_idx ON usage.webhook_deliveries USING btree (leased_until) WHERE (status = 'sending'::text);


--
-- Name: usage_events_default_case_org_id_recorded_xid_idx; Type: INDEX ATTACH; Schema: usage; Owner: -
--

ALTER INDEX usage.usage_events_subject_xid_idx ATTACH PARTITION usage.usage_events_default_case_org_id_recorded_xid_idx;


--
-- Name: usage_events_default_org_id_created_at_idx; Type: INDEX ATTACH; Schema: usage; Owner: -
--

ALTER INDEX usage.usage_events_org_created_idx ATTACH PARTITION usage.usage_events_default_org_id_created_at_idx;


--
-- Name: usage_events_default_pkey; Type: INDEX ATTACH; Schema: usage; Owner: -
--

ALTER INDEX usage.usage_events_pkey ATTACH PARTITION usage.usage_events_default_pkey;


--
-- Name: usage_events_default_recorded_xid_idx; Type: INDEX ATTACH; Schema: usage; Owner: -
--

ALTER INDEX usage.usage_events_recorded_xid_idx ATTACH PARTITION usage.usage_events_default_recorded_xid_idx;


--
-- Name: usage_events_default_user_id_created_at_idx; Type: INDEX ATTACH; Schema: usage; Owner: -
--

ALTER INDEX usage.usage_events_user_created_idx ATTACH PARTITION usage.usage_events_default_user_id_created_at_idx;


--
-- Name: usage_periods usage_periods_delete_kind_totals; Type: TRIGGER; Schema: usage; Owner: -
--

CREATE TRIGGER usage_periods_delete_kind_totals AFTER DELETE ON usage.usage_periods REFERENCING OLD TABLE AS deleted_periods FOR EACH STATEMENT EXECUTE FUNCTION usage.usage_periods_delete_kind_totals();


--
-- Name: organization_members organization_members_org_id_fkey; Type: FK CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.organization_members
    ADD CONSTRAINT organization_members_org_id_fkey FOREIGN KEY (org_id) REFERENCES usage.organizations(id) ON DELETE CASCADE;


--
-- Name: organization_members organization_members_user_id_fkey; Type: FK CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.organization_members
    ADD CONSTRAINT organization_members_user_id_fkey FOREIGN KEY (user_id) REFERENCES usage.users(id) ON DELETE CASCADE;


--
-- Name: organizations organizations_plan_id_fkey; Type: FK CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.organizations
    ADD CONSTRAINT organizations_plan_id_fkey FOREIGN KEY (plan_id) REFERENCES usage.plans(id);


--
-- Name: plan_limits plan_limits_plan_id_fkey; Type: FK CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.plan_limits
    ADD CONSTRAINT plan_limits_plan_id_fkey FOREIGN KEY (plan_id) REFERENCES usage.plans(id) ON DELETE CASCADE;


--
-- Name: quota_alerts quota_alerts_user_id_fkey; Type: FK CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.quota_alerts
    ADD CONSTRAINT quota_alerts_user_id_fkey FOREIGN KEY (user_id) REFERENCES usage.users(id) ON DELETE CASCADE;


--
-- Name: usage_grant_draws usage_grant_draws_grant_id_fkey; Type: FK CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.usage_grant_draws
    ADD CONSTRAINT usage_grant_draws_grant_id_fkey FOREIGN KEY (grant_id) REFERENCES usage.usage_grants(id);


--
-- Name: users users_plan_id_fkey; Type: FK CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.users
    ADD CONSTRAINT users_plan_id_fkey FOREIGN KEY (plan_id) REFERENCES usage.plans(id);


--
-- Name: webhook_deliveries webhook_deliveries_alert_id_fkey; Type: FK CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.webhook_deliveries
    ADD CONSTRAINT webhook_deliveries_alert_id_fkey FOREIGN KEY (alert_id) REFERENCES usage.quota_alerts(id) ON DELETE CASCADE;


--
-- Name: webhook_deliveries webhook_deliveries_endpoint_id_fkey; Type: FK CONSTRAINT; Schema: usage; Owner: -
--

ALTER TABLE ONLY usage.webhook_deliveries
    ADD CONSTRAINT webhook_deliveries_endpoint_id_fkey FOREIGN KEY (endpoint_id) REFERENCES usage.webhook_endpoints(id) ON DELETE CASCADE;


--
-- Name: organization_members; Type: ROW SECURITY; Schema: usage; Owner: -
--

ALTER TABLE usage.organization_members ENABLE ROW LEVEL SECURITY;

--
-- Name: organizations; Type: ROW SECURITY; Schema: usage; Owner: -
--

ALTER TABLE usage.organizations ENABLE ROW LEVEL SECURITY;

--
-- Name: quota_alerts; Type: ROW SECURITY; Schema: usage; Owner: -
--

ALTER TABLE usage.quota_alerts ENABLE ROW LEVEL SECURITY;

--
-- Name: token_usage_daily; Type: ROW SECURITY; Schema: usage; Owner: -
--

ALTER TABLE usage.token_usage_daily ENABLE ROW LEVEL SECURITY;

--
-- Name: usage_events; Type: ROW SECURITY; Schema: usage; Owner: -
--

ALTER TABLE usage.usage_events ENABLE ROW LEVEL SECURITY;

--
-- Name: usage_events_default; Type: ROW SECURITY; Schema: usage; Owner: -
--

ALTER TABLE usage.usage_events_default ENABLE ROW LEVEL SECURITY;

--
-- Name: usage_grant_marks; Type: ROW SECURITY; Schema: usage; Owner: -
--

ALTER TABLE usage.usage_grant_marks ENABLE ROW LEVEL SECURITY;

--
-- Name: usage_grants; Type: ROW SECURITY; Schema: usage; Owner: -
--

ALTER TABLE usage.usage_grants ENABLE ROW LEVEL SECURITY;

--
-- Name: organization_members usage_not_reader; Type: POLICY; Schema: usage; Owner: -
--

CREATE POLICY usage_not_reader ON usage.organization_members USING ((NOT ( SELECT usage.usage_is_reader() AS usage_is_reader))) WITH CHECK ((NOT ( SELECT usage.usage_is_reader() AS usage_is_reader)));


--
-- Name: organizations usage_not_reader; Type: POLICY; Schema: usage; Owner: -
--

CREATE POLICY usage_not_reader ON usage.organizations USING ((NOT ( SELECT usage.usage_is_reader() AS usage_is_reader))) WITH CHECK ((NOT ( SELECT usage.usage_is_reader() AS usage_is_reader)));


--
-- Name: quota_alerts usage_not_reader; Type: POLICY; Schema: usage; Owner: -
--

CREATE POLICY usage_not_reader ON usage.quota_alerts USING ((NOT ( SELECT usage.usage_is_reader() AS usage_is_reader))) WITH CHECK ((NOT ( SELECT usage.usage_is_reader() AS usage_is_reader)));


--
-- Name: token_usage_daily usage_not_reader; Type: POLICY; Schema: usage; Owner: -
--

CREATE POLICY usage_not_reader ON usage.token_usage_daily USING ((NOT ( SELECT usage.usage_is_reader() AS usage_is_reader))) WITH CHECK ((NOT ( SELECT usage.usage_is_reader() AS usage_is_reader)));


--
-- Name: usage_events usage_not_reader; Type: POLICY; Schema: usage; Owner: -
--

CREATE POLICY usage_not_reader ON usage.usage_events USING ((NOT ( SELECT usage.usage_is_reader() AS usage_is_reader))) WITH CHECK ((NOT ( SELECT usage.usage_is_reader() AS usage_is_reader)));


--
-- Name: usage_events_default usage_not_reader; Type: POLICY; Schema: usage; Owner: -
--

CREATE POLICY usage_not_reader ON usage.usage_events_default USING ((NOT ( SELECT usage.usage_is_reader() AS usage_is_reader))) WITH CHECK ((NOT ( SELECT usage.usage_is_reader() AS usage_is_reader)));


--
-- Name: usage_grant_marks usage_not_reader; Type: POLICY; Schema: usage; Owner: -
--

CREATE POLICY usage_not_reader ON usage.usage_grant_marks USING ((NOT ( SELECT usage.usage_is_reader() AS usage_is_reader))) WITH CHECK ((NOT ( SELECT usage.usage_is_reader() AS usage_is_reader)));


--
-- Name: usage_grants usage_not_reader; Type: POLICY; Schema: usage; Owner: -
--

CREATE POLICY usage_not_reader ON usage.usage_grants USING ((NOT ( SELECT usage.usage_is_reader() AS usage_is_reader))) WITH CHECK ((NOT ( SELECT usage.usage_is_reader() AS usage_is_reader)));


--
-- Name: usage_period_kind_totals usage_not_reader; Type: POLICY; Schema: usage; Owner: -
--

CREATE POLICY usage_not_reader ON usage.usage_period_kind_totals USING ((NOT ( SELECT usage.usage_is_reader() AS usage_is_reader))) WITH CHECK ((NOT ( SELECT usage.usage_is_reader() AS usage_is_reader)));


--
-- Name: usage_periods usage_not_reader; Type: POLICY; Schema: usage; Owner: -
--

CREATE POLICY usage_not_reader ON usage.usage_periods USING ((NOT ( SELECT usage.usage_is_reader() AS usage_is_reader))) WITH CHECK ((NOT ( SELECT usage.usage_is_reader() AS usage_is_reader)));


--
-- Name: users usage_not_reader; Type: POLICY; Schema: usage; Owner: -
--

CREATE POLICY usage_not_reader ON usage.users USING ((NOT ( SELECT usage.usage_is_reader() AS usage_is_reader))) WITH CHECK ((NOT ( SELECT usage.usage_is_reader() AS usage_is_reader)));


--
-- Name: usage_period_kind_totals; Type: ROW SECURITY; Schema: usage; Owner: -
--

ALTER TABLE usage.usage_period_kind_totals ENABLE ROW LEVEL SECURITY;

--
-- Name: usage_periods; Type: ROW SECURITY; Schema: usage; Owner: -
--

ALTER TABLE usage.usage_periods ENABLE ROW LEVEL SECURITY;

--
-- Name: organization_members usage_reader_own_org; Type: POLICY; Schema: usage; Owner: -
--

CREATE POLICY usage_reader_own_org ON usage.organization_members FOR SELECT USING (((org_id > 0) AND (org_id = ( SELECT usage.usage_current_org() AS usage_current_org))));


--
-- Name: organizations usage_reader_own_org; Type: POLICY; Schema: usage; Owner: -
--

CREATE POLICY usage_reader_own_org ON usage.organizations FOR SELECT USING (((id > 0) AND (id = ( SELECT usage.usage_current_org() AS usage_current_org))));


--
-- Name: quota_alerts usage_reader_own_org; Type: POLICY; Schema: usage; Owner: -
--

CREATE POLICY usage_reader_own_org ON usage.quota_alerts FOR SELECT USING (((org_id > 0) AND (org_id = ( SELECT usage.usage_current_org() AS usage_current_org))));


--
-- Name: token_usage_daily usage_reader_own_org; Type: POLICY; Schema: usage; Owner: -
--

CREATE POLICY usage_reader_own_org ON usage.token_usage_daily FOR SELECT USING (((org_id > 0) AND (org_id = ( SELECT usage.usage_current_org() AS usage_current_org))));


--
-- Name: usage_events usage_reader_own_org; Type: POLICY; Schema: usage; Owner: -
--

CREATE POLICY usage_reader_own_org ON usage.usage_events FOR SELECT USING (((org_id > 0) AND (org_id = ( SELECT usage.usage_current_org() AS usage_current_org))));


--
-- Name: usage_events_default usage_reader_own_org; Type: POLICY; Schema: usage; Owner: -
--

CREATE POLICY usage_reader_own_org ON usage.usage_events_default FOR SELECT USING (((org_id > 0) AND (org_id = ( SELECT usage.usage_current_org() AS usage_current_org))));


--
-- Name: usage_grant_marks usage_reader_own_org; Type: POLICY; Schema: usage; Owner: -
--

CREATE POLICY usage_reader_own_org ON usage.usage_grant_marks FOR SELECT USING (((org_id > 0) AND (org_id = ( SELECT usage.usage_current_org() AS usage_current_org))));


--
-- Name: usage_grants usage_reader_own_org; Type: POLICY; Schema: usage; Owner: -
--

CREATE POLICY usage_reader_own_org ON usage.usage_grants FOR SELECT USING (((org_id > 0) AND (org_id = ( SELECT usage.usage_current_org() AS usage_current_org))));


--
-- Name: usage_period_kind_totals usage_reader_own_org; Type: POLICY; Schema: usage; Owner: -
--

CREATE POLICY usage_reader_own_org ON usage.usage_period_kind_totals FOR SELECT USING (((org_id > 0) AND (org_id = ( SELECT usage.usage_current_org() AS usage_current_org))));


--
-- Name: usage_periods usage_reader_own_org; Type: POLICY; Schema: usage; Owner: -
--

CREATE POLICY usage_reader_own_org ON usage.usage_periods FOR SELECT USING (((org_id > 0) AND (org_id = ( SELECT usage.usage_current_org() AS usage_current_org))));


--
-- Name: users; Type: ROW SECURITY; Schema: usage; Owner: -
--

ALTER TABLE usage.users ENABLE ROW LEVEL SECURITY;

--
-- Name: FUNCTION usage_create_partition(p_month date); Type: ACL; Schema: usage; Owner: -
--

REVOKE ALL ON FUNCTION usage.usage_create_partition(p_month date) FROM PUBLIC;


--
-- Name: FUNCTION usage_detach_partition(p_partition text, p_before timestamp with time zone); Type: ACL; Schema: usage; Owner: -
--

REVOKE ALL ON FUNCTION usage.usage_detach_partition(p_partition text, p_before timestamp with time zone) FROM PUBLIC;


--
-- Name: FUNCTION usage_drop_detached_partition(p_partition text); Type: ACL; Schema: usage; Owner: -
--

REVOKE ALL ON FUNCTION usage.usage_drop_detached_partition(p_partition text) FROM PUBLIC;


--
-- Name: FUNCTION usage_partition_policies(p_table regclass); Type: ACL; Schema: usage; Owner: -
--

REVOKE ALL ON FUNCTION usage.usage_partition_policies(p_table regclass) FROM PUBLIC;


--
-- Name: FUNCTION usage_set_alert_emails(p_user_id bigint, p_preference text); Type: ACL; Schema: usage; Owner: -
--

REVOKE ALL ON FUNCTION usage.usage_set_alert_emails(p_user_id bigint, p_preference text) FROM PUBLIC;


--
-- Name: FUNCTION usage_unsubscribe(p_token text); Type: ACL; Schema: usage; Owner: -
--

REVOKE ALL ON FUNCTION usage.usage_unsubscribe(p_token text) FROM PUBLIC;


--
-- PostgreSQL database dump complete
--

