-- Organizations: usage spent in an organization is counted against the organization's plan
-- (its own time zone and billing anchor), summarised per member, readable by the
-- organization itself under row-level security; and idempotent recording.
--
-- Two spellings of "personal" (no organization), both deliberate:
--   * event-level rows (usage_events, token_usage_daily) carry org_id NULL;
--   * the subject books (usage_periods, usage_period_kind_totals, quota_alerts,
--     usage_idempotency_keys) carry org_id 0, because org_id is part of their primary or
--     unique key. A period of an organization has user_id 0 (it belongs to no one user).
-- Organization ids are positive, so 0 is never an organization.

CREATE TABLE organizations (
    id                 bigint PRIMARY KEY CONSTRAINT organizations_id_positive CHECK (id > 0),
    name               text NOT NULL DEFAULT '',
    timezone           text NOT NULL DEFAULT 'UTC',  -- IANA name; an unknown one is treated as UTC
    plan_id            bigint REFERENCES plans (id),
    billing_anchor_day smallint CONSTRAINT organizations_billing_anchor_day_check
                           CHECK (billing_anchor_day BETWEEN 1 AND 31), -- NULL = calendar month
    alerts_enabled     boolean NOT NULL DEFAULT true,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX organizations_plan_id_idx ON organizations (plan_id);

-- A user may belong to several organizations. Owners and admins receive the organization's
-- quota alerts.
CREATE TABLE organization_members (
    org_id     bigint NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       text   NOT NULL DEFAULT 'member' CONSTRAINT organization_members_role_check
                          CHECK (role IN ('owner', 'admin', 'member')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX organization_members_user_idx ON organization_members (user_id);

-- The organization the usage was spent in; NULL = personal usage.
ALTER TABLE usage_events
    ADD COLUMN org_id bigint CONSTRAINT usage_events_org_id_check CHECK (org_id > 0);
CREATE INDEX usage_events_org_created_idx ON usage_events (org_id, created_at)
    WHERE org_id IS NOT NULL;

-- The daily summary keeps the organization: one row per (user, local day, kind,
-- request_type, model, organization), NULL = personal. For usage in an organization `day` is
-- the date in the organization's time zone, so its days and its periods agree. The key holds
-- the organization as org_key (0 = personal): a primary key cannot hold a NULL, and a table
-- with one stays usable as a logical replication source (replica identity).
ALTER TABLE token_usage_daily
    ADD COLUMN org_id bigint,
    ADD COLUMN org_key bigint GENERATED ALWAYS AS (COALESCE(org_id, 0)) STORED;
ALTER TABLE token_usage_daily DROP CONSTRAINT token_usage_daily_pkey;
ALTER TABLE token_usage_daily ADD PRIMARY KEY (user_id, day, kind, request_type, model, org_key);
CREATE INDEX token_usage_daily_org_day_idx ON token_usage_daily (org_id, day)
    WHERE org_id IS NOT NULL;

-- An event set aside keeps its organization: a corrected copy must be re-inserted with it.
ALTER TABLE usage_quarantine ADD COLUMN org_id bigint;

-- Quota periods of a subject: a user's personal usage (user_id, org_id 0) or an
-- organization's (user_id 0, org_id).
ALTER TABLE usage_period_kind_totals
    DROP CONSTRAINT usage_period_kind_totals_user_id_period_period_start_fkey;
ALTER TABLE usage_period_kind_totals DROP CONSTRAINT usage_period_kind_totals_pkey;
ALTER TABLE usage_periods DROP CONSTRAINT usage_periods_pkey;
ALTER TABLE usage_periods
    ADD COLUMN org_id bigint NOT NULL DEFAULT 0,
    ADD CONSTRAINT usage_periods_subject_check CHECK (org_id >= 0 AND (org_id = 0 OR user_id = 0)),
    ADD PRIMARY KEY (user_id, org_id, period, period_start);
ALTER TABLE usage_period_kind_totals
    ADD COLUMN org_id bigint NOT NULL DEFAULT 0,
    ADD PRIMARY KEY (user_id, org_id, period, period_start, kind),
    ADD CONSTRAINT usage_period_kind_totals_period_fkey FOREIGN KEY (user_id, org_id, period, period_start)
        REFERENCES usage_periods (user_id, org_id, period, period_start) ON DELETE CASCADE;

-- An alert of an organization goes to each owner and admin: user_id is the recipient and
-- org_id the organization (0 = the user's personal quota).
ALTER TABLE quota_alerts
    ADD COLUMN org_id bigint NOT NULL DEFAULT 0 CONSTRAINT quota_alerts_org_id_check CHECK (org_id >= 0);
ALTER TABLE quota_alerts DROP CONSTRAINT quota_alerts_once;
ALTER TABLE quota_alerts
    ADD CONSTRAINT quota_alerts_once
        UNIQUE (user_id, org_id, metric, period, kind, period_start, threshold);

-- Settings the database itself needs, written by the worker at start from its config.
CREATE TABLE usage_settings (
    singleton        boolean PRIMARY KEY DEFAULT true CONSTRAINT usage_settings_singleton CHECK (singleton),
    -- ingest.idempotency_days: how long a usage_record() idempotency key is remembered.
    idempotency_days integer NOT NULL DEFAULT 7
                         CONSTRAINT usage_settings_idempotency_days_check CHECK (idempotency_days BETWEEN 1 AND 3650),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
INSERT INTO usage_settings DEFAULT VALUES;

-- One row per idempotency key of a user's personal usage (org_id 0) or of an organization:
-- the key names the event it first recorded. Trimmed by `retention` once older than
-- usage_settings.idempotency_days.
CREATE TABLE usage_idempotency_keys (
    org_id           bigint NOT NULL DEFAULT 0 CONSTRAINT usage_idempotency_keys_org_id_check CHECK (org_id >= 0),
    user_id          bigint NOT NULL,
    -- The key's owner among personal keys; 0 for an organization's (shared by its members).
    scope_user_id    bigint GENERATED ALWAYS AS (CASE WHEN org_id = 0 THEN user_id ELSE 0 END) STORED,
    idempotency_key  text   NOT NULL CONSTRAINT usage_idempotency_keys_key_check
                                CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    event_id         bigint NOT NULL,
    event_created_at timestamptz NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, scope_user_id, idempotency_key)
);
CREATE INDEX usage_idempotency_keys_recorded_idx ON usage_idempotency_keys (recorded_at);

-- usage_record() with the organization and an idempotency key.
DROP FUNCTION usage_record(bigint, text, bigint, bigint, bigint, integer, bigint, numeric, text,
                           text, jsonb, timestamptz);
CREATE FUNCTION usage_record(
    p_user_id           bigint,
    p_kind              text,
    p_tokens            bigint  DEFAULT 0,
    p_prompt_tokens     bigint  DEFAULT 0,
    p_completion_tokens bigint  DEFAULT 0,
    p_messages          integer DEFAULT 0,
    p_bytes             bigint  DEFAULT 0,
    p_cost              numeric DEFAULT NULL,
    p_request_type      text    DEFAULT '',
    p_model             text    DEFAULT '',
    p_metadata          jsonb   DEFAULT '{}',
    p_created_at        timestamptz DEFAULT now(),
    p_org_id            bigint  DEFAULT NULL,
    p_idempotency_key   text    DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_tokens bigint := LEAST(GREATEST(COALESCE(p_tokens, 0)::numeric,
                                      COALESCE(p_prompt_tokens, 0)::numeric
                                      + COALESCE(p_completion_tokens, 0)::numeric),
                             9223372036854775807);
    v_cost   numeric := p_cost;
    v_id     bigint;
    v_claim  bigint;
BEGIN
    IF v_cost IS NULL THEN
        SELECT p.per_event
             + COALESCE(p_prompt_tokens, 0) * p.per_1k_prompt_tokens / 1000
             + COALESCE(p_completion_tokens, 0) * p.per_1k_completion_tokens / 1000
             + GREATEST(v_tokens - COALESCE(p_prompt_tokens, 0)::numeric
                        - COALESCE(p_completion_tokens, 0)::numeric, 0)
               * p.per_1k_tokens / 1000
             + COALESCE(p_bytes, 0) * p.per_mb / 1048576
          INTO v_cost
          FROM prices p
         WHERE p.kind = p_kind
           AND p.model IN (COALESCE(p_model, ''), '')
           AND p.valid_from <= p_created_at
         ORDER BY (p.model = '') ASC, p.valid_from DESC
         LIMIT 1;
    END IF;
    -- Within numeric(20, 8) but past the bounds, so usage_events_cost_in_range (or
    -- _not_negative) refuses it; NaN stays NaN, which the bound refuses as well.
    IF v_cost <> 'NaN'::numeric THEN
        v_cost := GREATEST(LEAST(v_cost, 100000000000), -1);
    END IF;
    v_id := nextval('usage_events_id_seq');
    IF p_idempotency_key IS NOT NULL THEN
        -- Claim the key for this event. A concurrent call with the same key waits here for
        -- the first to commit, then finds the key taken; a key older than the window is
        -- taken over. Either way exactly one event carries the key.
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
             WHERE k.org_id = COALESCE(p_org_id, 0)
               AND k.scope_user_id = CASE WHEN p_org_id IS NULL THEN p_user_id ELSE 0 END
               AND k.idempotency_key = p_idempotency_key;
            RETURN v_claim;
        END IF;
    END IF;
    -- After the claim: a retry whose user has left the organization since still gets its
    -- event's id; a refusal here rolls the claim back with the call.
    IF p_org_id IS NOT NULL AND NOT EXISTS (
           SELECT 1 FROM organization_members m WHERE m.org_id = p_org_id AND m.user_id = p_user_id) THEN
        RAISE EXCEPTION 'usage_record: user % is not a member of organization %', p_user_id, p_org_id
              USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'usage_record_org_member',
                    HINT = 'add the user to organization_members, or record the usage as personal (p_org_id => NULL)';
    END IF;
    INSERT INTO usage_events (id, user_id, org_id, kind, request_type, model, tokens, prompt_tokens,
                              completion_tokens, messages, bytes, cost, metadata, created_at)
    VALUES (v_id, p_user_id, p_org_id, p_kind, COALESCE(p_request_type, ''), COALESCE(p_model, ''),
            v_tokens, COALESCE(p_prompt_tokens, 0), COALESCE(p_completion_tokens, 0),
            COALESCE(p_messages, 0), COALESCE(p_bytes, 0), COALESCE(v_cost, 0),
            COALESCE(p_metadata, '{}'), p_created_at);
    RETURN v_id;
END;
$$;

-- The quota rows of one subject (a user's personal usage: p_user_id, 0; an organization's:
-- 0, p_org_id) at `at`, given its zone, anchor and plan: what quota_status() and
-- org_quota_status() return.
CREATE FUNCTION usage_subject_status(p_user_id bigint, p_org_id bigint, p_tz text, p_anchor int,
                                     p_plan bigint, p_at timestamptz)
RETURNS TABLE (metric text, period text, kind text, used numeric, limit_value numeric,
               remaining numeric, unlimited boolean, exceeded boolean, percent numeric,
               period_start timestamptz, period_end timestamptz)
LANGUAGE plpgsql STABLE AS $$
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
BEGIN
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
            p_from := GREATEST(b.period_start, c_end);
            p_to := b.period_end;
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

-- quota_status() of a user's personal usage, now through usage_subject_status (settings
-- pinned on the function, such as its search_path, are kept: CREATE OR REPLACE resets them).
CREATE TEMP TABLE quota_status_settings ON COMMIT DROP AS
SELECT unnest(proconfig) AS setting FROM pg_proc
 WHERE oid = 'quota_status(bigint, timestamptz)'::regprocedure;

CREATE OR REPLACE FUNCTION quota_status(p_user_id bigint, p_at timestamptz DEFAULT now())
RETURNS TABLE (metric text, period text, kind text, used numeric, limit_value numeric,
               remaining numeric, unlimited boolean, exceeded boolean, percent numeric,
               period_start timestamptz, period_end timestamptz)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    u_tz     text;
    u_anchor int;
    u_plan   bigint;
BEGIN
    SELECT usr.timezone, usr.billing_anchor_day, usr.plan_id INTO u_tz, u_anchor, u_plan
      FROM users usr WHERE usr.id = p_user_id;
    IF FOUND THEN
        RETURN QUERY SELECT * FROM usage_subject_status(p_user_id, 0, u_tz, u_anchor, u_plan, p_at);
    END IF;
END;
$$;

DO $$
DECLARE
    s text;
BEGIN
    FOR s IN SELECT setting FROM quota_status_settings LOOP
        EXECUTE format('ALTER FUNCTION quota_status(bigint, timestamptz) SET %I = %s',
                       split_part(s, '=', 1), substr(s, strpos(s, '=') + 1));
    END LOOP;
END;
$$;
DROP TABLE quota_status_settings;

-- The same rows for an organization's shared quota. An unknown organization returns no rows.
CREATE FUNCTION org_quota_status(p_org_id bigint, p_at timestamptz DEFAULT now())
RETURNS TABLE (metric text, period text, kind text, used numeric, limit_value numeric,
               remaining numeric, unlimited boolean, exceeded boolean, percent numeric,
               period_start timestamptz, period_end timestamptz)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    o_tz     text;
    o_anchor int;
    o_plan   bigint;
BEGIN
    SELECT o.timezone, o.billing_anchor_day, o.plan_id INTO o_tz, o_anchor, o_plan
      FROM organizations o WHERE o.id = p_org_id;
    IF FOUND THEN
        RETURN QUERY SELECT * FROM usage_subject_status(0, p_org_id, o_tz, o_anchor, o_plan, p_at);
    END IF;
END;
$$;

-- Sums of the daily summary per day, ISO week, month or year; rows of `p_rows` (a user's
-- personal rows, or an organization's) are chosen by the two public wrappers below.
CREATE FUNCTION usage_summary_check_granularity(p_granularity text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_granularity IS NULL OR p_granularity NOT IN ('day', 'week', 'month', 'year') THEN
        RAISE EXCEPTION 'unknown granularity "%"; expected day, week, month or year', p_granularity
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
END;
$$;

-- A user's personal usage (usage in an organization is in org_usage_summary).
CREATE OR REPLACE FUNCTION usage_summary(p_user_id bigint, p_granularity text, p_from date, p_to date)
RETURNS TABLE (period_start date, events bigint, tokens bigint, prompt_tokens bigint,
               completion_tokens bigint, messages bigint, bytes bigint, cost numeric)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM usage_summary_check_granularity(p_granularity);
    RETURN QUERY
    SELECT date_trunc(p_granularity, d.day::timestamp)::date,
           sum(d.events)::bigint, sum(d.tokens)::bigint, sum(d.prompt_tokens)::bigint,
           sum(d.completion_tokens)::bigint, sum(d.messages)::bigint, sum(d.bytes)::bigint,
           sum(d.cost)
      FROM token_usage_daily d
     WHERE d.user_id = p_user_id AND d.org_id IS NULL
       AND d.day BETWEEN p_from AND p_to
     GROUP BY 1
     ORDER BY 1;
END;
$$;

-- An organization's usage (all members), by its local days.
CREATE FUNCTION org_usage_summary(p_org_id bigint, p_granularity text, p_from date, p_to date)
RETURNS TABLE (period_start date, events bigint, tokens bigint, prompt_tokens bigint,
               completion_tokens bigint, messages bigint, bytes bigint, cost numeric)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM usage_summary_check_granularity(p_granularity);
    RETURN QUERY
    SELECT date_trunc(p_granularity, d.day::timestamp)::date,
           sum(d.events)::bigint, sum(d.tokens)::bigint, sum(d.prompt_tokens)::bigint,
           sum(d.completion_tokens)::bigint, sum(d.messages)::bigint, sum(d.bytes)::bigint,
           sum(d.cost)
      FROM token_usage_daily d
     WHERE d.org_id = p_org_id
       AND d.day BETWEEN p_from AND p_to
     GROUP BY 1
     ORDER BY 1;
END;
$$;

-- Who used what in an organization over its local days p_from..p_to: one row per member
-- (past members too) with usage, the largest token users first.
CREATE FUNCTION org_usage_by_member(p_org_id bigint, p_from date, p_to date)
RETURNS TABLE (user_id bigint, events bigint, tokens bigint, prompt_tokens bigint,
               completion_tokens bigint, messages bigint, bytes bigint, cost numeric)
LANGUAGE sql STABLE AS $$
    SELECT d.user_id, sum(d.events)::bigint, sum(d.tokens)::bigint, sum(d.prompt_tokens)::bigint,
           sum(d.completion_tokens)::bigint, sum(d.messages)::bigint, sum(d.bytes)::bigint,
           sum(d.cost)
      FROM token_usage_daily d
     WHERE d.org_id = p_org_id
       AND d.day BETWEEN p_from AND p_to
     GROUP BY d.user_id
     ORDER BY sum(d.tokens) DESC, d.user_id;
$$;

-- Row-level security. The organization a reading session belongs to: by default the
-- session setting usage.org_id (SET usage.org_id = '2'); NULL when unset. A Supabase project
-- replaces the body to read it from the JWT (docs/SCHEMA.md).
CREATE FUNCTION usage_current_org() RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT NULLIF(current_setting('usage.org_id', true), '')::bigint
$$;

-- Whether the current role reads under the organization policies: a member of usage_reader
-- (created by deploy/roles.sql; false while it does not exist).
CREATE FUNCTION usage_is_reader() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'usage_reader')
                THEN pg_has_role(current_user, 'usage_reader', 'MEMBER')
                ELSE false END
$$;

-- Every role but usage_reader's members keeps what its grants allow (the table's owner and
-- BYPASSRLS roles such as the worker's skip policies altogether); a reader sees only the rows
-- of its organization, and no policy lets it write.
DO $$
DECLARE
    v_table text;
    v_org   text;
BEGIN
    FOR v_table, v_org IN VALUES ('usage_events', 'org_id'), ('token_usage_daily', 'org_id'),
                                 ('usage_periods', 'org_id'), ('usage_period_kind_totals', 'org_id'),
                                 ('quota_alerts', 'org_id'), ('organizations', 'id'),
                                 ('organization_members', 'org_id') LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', v_table);
        EXECUTE format('CREATE POLICY usage_not_reader ON %I
                            USING (NOT (SELECT usage_is_reader()))
                            WITH CHECK (NOT (SELECT usage_is_reader()))', v_table);
        EXECUTE format('CREATE POLICY usage_reader_own_org ON %I FOR SELECT
                            USING (%I > 0 AND %I = (SELECT usage_current_org()))', v_table, v_org, v_org);
    END LOOP;
END $$;

-- The functions applications call fix their search_path (see 2026-11-29-000007_schema_home).
DO $$
DECLARE
    v_fn regprocedure;
BEGIN
    FOREACH v_fn IN ARRAY ARRAY[
        'usage_record(bigint, text, bigint, bigint, bigint, integer, bigint, numeric, text, text, jsonb, timestamptz, bigint, text)',
        'usage_summary(bigint, text, date, date)',
        'org_quota_status(bigint, timestamptz)',
        'org_usage_summary(bigint, text, date, date)',
        'org_usage_by_member(bigint, date, date)'
    ]::regprocedure[] LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = %I, pg_temp', v_fn, current_schema());
    END LOOP;
END $$;
