-- Subjects first-class: usage_subjects (a view over users and organizations) gives every
-- subject's zone, anchor, plan and alert setting, usage_event_subject() maps an event to its
-- subject, and the personal and organization functions share one body each
-- (usage_subject_status, usage_subject_summary, usage_subject_days). The period step of the
-- aggregation moves into the aggregate job's own statements (src/jobs/sql/period_step/), so
-- its PL/pgSQL functions go.
--
-- users gets row-level security like the other tables: usage_subjects reads it with the
-- caller's rights, and a reader (usage_reader), which reads an organization through the
-- view, sees no user at all. Every other role is let through by usage_not_reader.
DROP FUNCTION usage_subject_status(bigint, bigint, text, integer, bigint, timestamptz);
DROP FUNCTION usage_periods_add_batch();
DROP FUNCTION usage_periods_add_exact();
DROP FUNCTION usage_anchor_date(date, integer);

ALTER TABLE users ENABLE ROW LEVEL SECURITY;
CREATE POLICY usage_not_reader ON users
    USING (NOT (SELECT usage_is_reader()))
    WITH CHECK (NOT (SELECT usage_is_reader()));

-- ==== Written by scripts/sql-migration from sql/: the definitions this migration changes ====
SET LOCAL check_function_bodies = off;

-- org_quota_status(org_id, at = now()): an organization's shared quota state at `at`, in its
-- own zone and billing anchor; see usage_subject_status(). Nothing when the organization is
-- not in organizations, or not visible to the caller (row-level security).
CREATE OR REPLACE FUNCTION org_quota_status(p_org_id bigint, p_at timestamptz DEFAULT now())
RETURNS TABLE(metric text, period text, kind text, used numeric, limit_value numeric, remaining numeric, unlimited boolean, exceeded boolean, percent numeric, period_start timestamptz, period_end timestamptz)
LANGUAGE sql
STABLE
SET search_path FROM CURRENT
AS $$
    -- Organization ids are positive: (0, 0) would be user 0's personal usage.
    SELECT * FROM usage_subject_status(0, p_org_id, p_at) WHERE p_org_id > 0
$$;

-- org_usage_by_member(org_id, from, to): the usage spent in an organization on its local days
-- from..to, per member (former members included), the largest token users first.
CREATE OR REPLACE FUNCTION org_usage_by_member(p_org_id bigint, p_from date, p_to date)
RETURNS TABLE(user_id bigint, events bigint, tokens bigint, prompt_tokens bigint, completion_tokens bigint, messages bigint, bytes bigint, cost numeric)
LANGUAGE sql
STABLE
SET search_path FROM CURRENT
AS $$
    SELECT d.user_id, sum(d.events)::bigint, sum(d.tokens)::bigint, sum(d.prompt_tokens)::bigint,
           sum(d.completion_tokens)::bigint, sum(d.messages)::bigint, sum(d.bytes)::bigint,
           sum(d.cost)
      FROM usage_subject_days(0, p_org_id, p_from, p_to) d
     WHERE p_org_id > 0  -- (0, 0) would be user 0's personal usage
     GROUP BY d.user_id
     ORDER BY sum(d.tokens) DESC, d.user_id;
$$;

-- org_usage_summary(org_id, granularity, from, to): the usage spent in an organization by all
-- its members on its local days from..to, per day, week, month or year; see
-- usage_subject_summary().
CREATE OR REPLACE FUNCTION org_usage_summary(p_org_id bigint, p_granularity text, p_from date, p_to date)
RETURNS TABLE(period_start date, events bigint, tokens bigint, prompt_tokens bigint, completion_tokens bigint, messages bigint, bytes bigint, cost numeric)
LANGUAGE sql
STABLE
SET search_path FROM CURRENT
AS $$
    -- Organization ids are positive: (0, 0) would be user 0's personal usage.
    SELECT * FROM usage_subject_summary(0, p_org_id, p_granularity, p_from, p_to)
     WHERE p_org_id > 0
$$;

-- quota_status(user_id, at = now()): a user's personal quota state (usage without an
-- organization) at `at`; see usage_subject_status(). Nothing when the user is not in users.
CREATE OR REPLACE FUNCTION quota_status(p_user_id bigint, p_at timestamptz DEFAULT now())
RETURNS TABLE(metric text, period text, kind text, used numeric, limit_value numeric, remaining numeric, unlimited boolean, exceeded boolean, percent numeric, period_start timestamptz, period_end timestamptz)
LANGUAGE sql
STABLE
SET search_path FROM CURRENT
AS $$
    SELECT * FROM usage_subject_status(p_user_id, 0, p_at)
$$;

-- usage_create_partition(month): creates the partition of usage_events for the UTC month
-- starting on `month`, named usage_events_YYYY_MM, with the parent's row-level security
-- policies, unless it exists; returns whether it created it.
-- - Rows of that month waiting in the default partition move into it in the same transaction
--   (PostgreSQL refuses the new partition while the default one holds rows of its range);
--   their recorded_xid is kept, so aggregation is unaffected.
-- - The parent is locked before the default partition, in the order an INSERT takes them,
--   so the two cannot deadlock; inserts wait for this short transaction.
-- - SECURITY DEFINER, owned by the schema's owner, EXECUTE revoked from PUBLIC (granted to
--   the daemon's role by deploy/roles.sql): the daemon creates partitions without owning
--   anything. The name is derived from the month, never taken from the caller.
CREATE OR REPLACE FUNCTION usage_create_partition(p_month date)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
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
REVOKE EXECUTE ON FUNCTION usage_create_partition(date) FROM PUBLIC;

-- usage_event_subject(user_id, org_id): the subject an event counts for (see usage_subjects):
-- (user_id, 0) for personal usage (org_id NULL), (0, org_id) for usage spent in an
-- organization. The one place this mapping is written; an inlined SQL function, so a join
-- on it costs no call per row.
CREATE OR REPLACE FUNCTION usage_event_subject(p_user_id bigint, p_org_id bigint)
RETURNS TABLE(user_id bigint, org_id bigint)
LANGUAGE sql
IMMUTABLE PARALLEL SAFE
ROWS 1
AS $$
    SELECT CASE WHEN p_org_id IS NULL THEN p_user_id ELSE 0 END, COALESCE(p_org_id, 0)
$$;

-- usage_period_between(natural_start, natural_end, prev_end, next_start): the bounds of a new
-- period: its natural bounds (usage_period_bounds) trimmed to its neighbours, so that a
-- subject's periods never overlap: from the later of its natural start and the previous
-- period's end, to the earlier of its natural end and the next period's start (NULL: no such
-- neighbour). An inlined SQL function.
CREATE OR REPLACE FUNCTION usage_period_between(p_natural_start timestamptz, p_natural_end timestamptz, p_prev_end timestamptz, p_next_start timestamptz)
RETURNS TABLE(period_start timestamptz, period_end timestamptz)
LANGUAGE sql
IMMUTABLE PARALLEL SAFE
ROWS 1
AS $$
    SELECT GREATEST(p_natural_start, p_prev_end), LEAST(p_natural_end, p_next_start)
$$;

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

-- usage_subject_days(user_id, org_id, from, to): the daily summary rows (token_usage_daily)
-- of one subject's usage on the local days from..to (inclusive): a user's personal rows
-- (org_id NULL) for (user, 0), every member's rows in the organization for (0, org). Two
-- branches, one of which a one-time filter switches off, so each reads its own index. An
-- inlined SQL function: callers filter and group it as a table.
CREATE OR REPLACE FUNCTION usage_subject_days(p_user_id bigint, p_org_id bigint, p_from date, p_to date)
RETURNS SETOF token_usage_daily
LANGUAGE sql
STABLE
AS $$
    SELECT d.* FROM token_usage_daily d
     WHERE p_org_id = 0 AND d.user_id = p_user_id AND d.org_id IS NULL
       AND d.day BETWEEN p_from AND p_to
    UNION ALL
    SELECT d.* FROM token_usage_daily d
     WHERE p_org_id > 0 AND d.org_id = p_org_id
       AND d.day BETWEEN p_from AND p_to
$$;

-- usage_subject_status(user_id, org_id, at): the quota state of one subject (a user's
-- personal usage: (user, 0); an organization's: (0, org)) at `at`, the body of quota_status()
-- and org_quota_status(). One row per metric and period kind over all event kinds, and one
-- per kind-scoped limit of the subject's plan: what was used in the period containing `at`
-- (the subject's open or closed period, or, where none has events yet, its natural period
-- after any earlier one), the limit (NULL: unlimited), what remains and the period's bounds.
-- No row when the subject is not in usage_subjects.
CREATE OR REPLACE FUNCTION usage_subject_status(p_user_id bigint, p_org_id bigint, p_at timestamptz)
RETURNS TABLE(metric text, period text, kind text, used numeric, limit_value numeric, remaining numeric, unlimited boolean, exceeded boolean, percent numeric, period_start timestamptz, period_end timestamptz)
LANGUAGE plpgsql
STABLE
AS $$
#variable_conflict use_column
DECLARE
    c_start    timestamptz;
    c_end      timestamptz;
    c_requests bigint;
    c_messages bigint;
    c_tokens   bigint;
    c_bytes    bigint;
    c_cost     numeric;
    b          record;
    per    text;
    p_from timestamptz;
    p_to   timestamptz;
    known  boolean;
    p_tz     text;
    p_anchor integer;
    p_plan   bigint;
BEGIN
    SELECT su.timezone, su.billing_anchor_day, su.plan_id INTO p_tz, p_anchor, p_plan
      FROM usage_subjects su
     WHERE su.user_id = p_user_id AND su.org_id = p_org_id;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    FOREACH per IN ARRAY ARRAY['day', 'month'] LOOP
        -- The latest period starting at or before `at`: the current one if it has not ended.
        SELECT up.period_start, up.period_end, up.requests, up.messages, up.tokens, up.bytes, up.cost
          INTO c_start, c_end, c_requests, c_messages, c_tokens, c_bytes, c_cost
          FROM usage_periods up
         WHERE up.user_id = p_user_id AND up.org_id = p_org_id AND up.period = per
           AND up.period_start <= p_at
         ORDER BY up.period_start DESC
         LIMIT 1;
        known := FOUND AND c_end > p_at;
        IF known THEN
            p_from := c_start;
            p_to := c_end;
        ELSE
            -- No events yet in this period: its natural bounds, after any earlier period.
            b := usage_period_bounds(p_tz, p_anchor, per, p_at);
            SELECT t.period_start, t.period_end INTO p_from, p_to
              FROM usage_period_between(b.period_start, b.period_end, c_end, NULL) t;
        END IF;
        -- The five totals over all kinds, then one row per kind-scoped limit: UNION ALL and one
        -- small sort, no de-duplication.
        RETURN QUERY
        SELECT x.metric, per, x.kind, x.used, x.limit_value,
               CASE WHEN x.limit_value IS NOT NULL THEN GREATEST(x.limit_value - x.used, 0) END,
               x.limit_value IS NULL,
               COALESCE(x.used >= x.limit_value, false),
               CASE WHEN x.limit_value IS NULL THEN NULL
                    WHEN x.limit_value = 0 THEN 100::numeric
                    ELSE round(x.used * 100 / x.limit_value, 2) END,
               p_from, p_to
          FROM (SELECT m.metric, ''::text AS kind,
                       CASE WHEN NOT known THEN 0::numeric ELSE m.used END AS used,
                       l.max_value AS limit_value
                  FROM (VALUES ('bytes', c_bytes::numeric), ('cost', c_cost),
                               ('messages', c_messages::numeric), ('requests', c_requests::numeric),
                               ('tokens', c_tokens::numeric)) AS m (metric, used)
                  LEFT JOIN plan_limits l
                    ON l.plan_id = p_plan AND l.period = per AND l.kind = '' AND l.metric = m.metric
                UNION ALL
                SELECT l.metric, l.kind,
                       COALESCE(CASE l.metric WHEN 'requests' THEN k.requests::numeric
                                              WHEN 'messages' THEN k.messages::numeric
                                              WHEN 'tokens' THEN k.tokens::numeric
                                              WHEN 'bytes' THEN k.bytes::numeric
                                              ELSE k.cost END, 0),
                       l.max_value
                  FROM plan_limits l
                  LEFT JOIN usage_period_kind_totals k
                    ON known AND k.user_id = p_user_id AND k.org_id = p_org_id AND k.period = per
                   AND k.period_start = p_from AND k.kind = l.kind
                 WHERE l.plan_id = p_plan AND l.period = per AND l.kind <> '') AS x
         ORDER BY x.metric, x.kind;
    END LOOP;
END;
$$;

-- usage_subject_summary(user_id, org_id, granularity, from, to): one subject's daily summary
-- over the local days from..to, summed per day, week, month or year (the first day of each
-- as period_start): the body of usage_summary() and org_usage_summary().
CREATE OR REPLACE FUNCTION usage_subject_summary(p_user_id bigint, p_org_id bigint, p_granularity text, p_from date, p_to date)
RETURNS TABLE(period_start date, events bigint, tokens bigint, prompt_tokens bigint, completion_tokens bigint, messages bigint, bytes bigint, cost numeric)
LANGUAGE plpgsql
STABLE
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

-- usage_summary(user_id, granularity, from, to): a user's personal usage (without an
-- organization) on the local days from..to, per day, week, month or year; see
-- usage_subject_summary().
CREATE OR REPLACE FUNCTION usage_summary(p_user_id bigint, p_granularity text, p_from date, p_to date)
RETURNS TABLE(period_start date, events bigint, tokens bigint, prompt_tokens bigint, completion_tokens bigint, messages bigint, bytes bigint, cost numeric)
LANGUAGE sql
STABLE
SET search_path FROM CURRENT
AS $$
    SELECT * FROM usage_subject_summary(p_user_id, 0, p_granularity, p_from, p_to)
$$;

-- usage_subjects: every subject, with what its books are kept by. A subject is whose quota
-- usage counts against: a user's personal usage, keyed (user_id = the user, org_id = 0), or
-- an organization's shared usage, keyed (user_id = 0, org_id = the organization). Periods,
-- per-kind totals and alerts are keyed the same way; usage_event_subject() maps an event to
-- its subject.
--
-- timezone is as declared (usage_timezone_or_utc() gives the zone actually used), anchor the
-- billing anchor day (NULL: calendar months), email NULL for an organization (its alerts go
-- to its owners and admins). security_invoker: a reader sees what the policies let it see of
-- users and organizations, here as anywhere.
CREATE OR REPLACE VIEW usage_subjects WITH (security_invoker = true) AS
SELECT u.id AS user_id, 0::bigint AS org_id, u.name, u.email, u.timezone,
       u.billing_anchor_day, u.plan_id, u.alerts_enabled
  FROM users u
UNION ALL
SELECT 0::bigint, o.id, o.name, NULL::text, o.timezone, o.billing_anchor_day, o.plan_id,
       o.alerts_enabled
  FROM organizations o;
