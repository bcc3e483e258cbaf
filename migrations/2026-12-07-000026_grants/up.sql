-- Credit grants: allowances on top of the plan (usage_grant(), usage_void_grant()), drawn down
-- past the plan's limit, earliest expiry first; the consumption of each recorded per period
-- (usage_grant_draws), the marks that cut periods at a grant's start, expiry or void
-- (usage_grant_marks); the answers count the balance; credit alerts in the alert outbox.
CREATE TABLE usage_grants (
    id          bigserial PRIMARY KEY,
    user_id     bigint NOT NULL DEFAULT 0,
    org_id      bigint NOT NULL DEFAULT 0,
    metric      text NOT NULL
                CONSTRAINT usage_grants_metric_check
                CHECK (metric IN ('requests', 'messages', 'tokens', 'bytes', 'cost')),
    period      text NOT NULL CONSTRAINT usage_grants_period_check CHECK (period IN ('day', 'month')),
    kind        text NOT NULL DEFAULT ''
                CONSTRAINT usage_grants_kind_check CHECK (kind ~ '^([a-z][a-z0-9_]{0,63})?$'),
    amount      numeric NOT NULL
                CONSTRAINT usage_grants_amount_check CHECK (amount > 0 AND amount < 'Infinity'),
    starts_at   timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    reason      text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text NOT NULL DEFAULT session_user,
    voided_at   timestamptz,
    voided_by   text,
    void_reason text,
    -- false until the aggregate job has recorded what this grant gave (usage_grant_settle).
    settled     boolean NOT NULL DEFAULT false,
    CONSTRAINT usage_grants_subject_check CHECK (org_id >= 0 AND (org_id = 0 OR user_id = 0)),
    CONSTRAINT usage_grants_bounds_check CHECK (expires_at > starts_at AND isfinite(starts_at) AND isfinite(expires_at)),
    CONSTRAINT usage_grants_voided_check CHECK ((voided_at IS NULL) = (voided_by IS NULL))
);
CREATE INDEX usage_grants_subject_idx ON usage_grants (user_id, org_id, metric, period, kind);
CREATE INDEX usage_grants_unsettled_idx ON usage_grants (user_id, org_id) WHERE NOT settled;

-- Grants are history: a grant ends by being voided, never deleted (deploy/roles.sql gives no
-- role but the owner DELETE on it, and what a grant gave references it).
CREATE TABLE usage_grant_draws (
    grant_id     bigint NOT NULL REFERENCES usage_grants (id),
    period_start timestamptz NOT NULL,
    period_end   timestamptz NOT NULL,
    drawn        numeric NOT NULL CONSTRAINT usage_grant_draws_drawn_check CHECK (drawn > 0),
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (grant_id, period_start)
);

CREATE TABLE usage_grant_marks (
    user_id  bigint NOT NULL,
    org_id   bigint NOT NULL,
    period   text NOT NULL,
    kind     text NOT NULL,
    at       timestamptz NOT NULL,
    since    timestamptz NOT NULL,
    requests bigint NOT NULL DEFAULT 0,
    messages bigint NOT NULL DEFAULT 0,
    tokens   bigint NOT NULL DEFAULT 0,
    bytes    bigint NOT NULL DEFAULT 0,
    cost     numeric NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, org_id, period, kind, at)
);

-- A reader sees its organization's grants, never anyone else's.
DO $$
DECLARE
    v_table text;
BEGIN
    FOREACH v_table IN ARRAY ARRAY['usage_grants', 'usage_grant_marks'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', v_table);
        EXECUTE format('CREATE POLICY usage_not_reader ON %I
                            USING (NOT (SELECT usage_is_reader()))
                            WITH CHECK (NOT (SELECT usage_is_reader()))', v_table);
        EXECUTE format('CREATE POLICY usage_reader_own_org ON %I FOR SELECT
                            USING (org_id > 0 AND org_id = (SELECT usage_current_org()))', v_table);
    END LOOP;
END $$;

-- Credit alerts share the quota alerts' outbox: `alert` says which, `grant_id` the newest
-- grant active when it was decided (a new grant can cross a threshold again).
ALTER TABLE quota_alerts
    ADD COLUMN alert text NOT NULL DEFAULT 'quota'
        CONSTRAINT quota_alerts_alert_check
        CHECK (alert IN ('quota', 'credit.low', 'credit.depleted', 'credit.recovered')),
    ADD COLUMN grant_id bigint NOT NULL DEFAULT 0;
ALTER TABLE quota_alerts DROP CONSTRAINT quota_alerts_once;
ALTER TABLE quota_alerts
    ADD CONSTRAINT quota_alerts_once
    UNIQUE (user_id, org_id, metric, period, kind, period_start, threshold, alert, grant_id);

ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_event_type_check;
ALTER TABLE webhook_deliveries ADD CONSTRAINT webhook_deliveries_event_type_check
    CHECK (event_type IN ('quota.threshold', 'quota.exhausted',
                          'credit.low', 'credit.depleted', 'credit.recovered'));

DROP FUNCTION quota_status(bigint, timestamptz);
DROP FUNCTION org_quota_status(bigint, timestamptz);
DROP FUNCTION usage_limit_checks(bigint, bigint, text, timestamptz, numeric, numeric, numeric, numeric);
DROP FUNCTION usage_subject_status(bigint, bigint, timestamptz);

-- ==== Written by scripts/sql-migration from sql/: the definitions this migration changes ====
SET LOCAL check_function_bodies = off;

-- org_quota_status(org_id, at = now()): an organization's shared quota state at `at`, in its
-- own zone and billing anchor; see usage_subject_status(). Nothing when the organization is
-- not in organizations, or not visible to the caller (row-level security).
CREATE OR REPLACE FUNCTION org_quota_status(p_org_id bigint, p_at timestamptz DEFAULT now())
RETURNS TABLE(metric text, period text, kind text, used numeric, limit_value numeric, remaining numeric, unlimited boolean, exceeded boolean, percent numeric, period_start timestamptz, period_end timestamptz, enforcement text, granted numeric, grant_remaining numeric)
LANGUAGE sql
STABLE
SET search_path FROM CURRENT
AS $$
    -- Organization ids are positive: (0, 0) would be user 0's personal usage.
    SELECT * FROM usage_subject_status(0, p_org_id, p_at) WHERE p_org_id > 0
$$;

-- quota_status(user_id, at = now()): a user's personal quota state (usage without an
-- organization) at `at`; see usage_subject_status(). Nothing when the user is not in users.
CREATE OR REPLACE FUNCTION quota_status(p_user_id bigint, p_at timestamptz DEFAULT now())
RETURNS TABLE(metric text, period text, kind text, used numeric, limit_value numeric, remaining numeric, unlimited boolean, exceeded boolean, percent numeric, period_start timestamptz, period_end timestamptz, enforcement text, granted numeric, grant_remaining numeric)
LANGUAGE sql
STABLE
SET search_path FROM CURRENT
AS $$
    SELECT * FROM usage_subject_status(p_user_id, 0, p_at)
$$;

-- usage_check_event(user_id, kind, tokens, prompt_tokens, completion_tokens, messages, bytes,
-- cost, request_type, model, metadata, created_at, org_id): the body of usage_check(), which
-- see; usage_check() also takes the idempotency key, which changes nothing here.
CREATE OR REPLACE FUNCTION usage_check_event(p_user_id bigint, p_kind text, p_tokens bigint, p_prompt_tokens bigint, p_completion_tokens bigint, p_messages integer, p_bytes bigint, p_cost numeric, p_request_type text, p_model text, p_metadata jsonb, p_created_at timestamptz, p_org_id bigint)
RETURNS TABLE(fits boolean, metric text, period text, kind text, enforcement text, limit_value numeric, used numeric, remaining numeric, resets_at timestamptz)
LANGUAGE plpgsql
STABLE
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

-- usage_enforce_hard_limits(user_id, org_id, kind, at, messages, tokens, bytes, cost): refuses
-- an event that would take its subject past a hard limit of its plan (usage_limit_checks),
-- with SQLSTATE UQ001 and a message naming the subject, metric, period, kind, limit, what is
-- used, what its grants have left and when the period resets. Called by usage_record() before it inserts, only for a
-- subject whose plan has a hard limit.
-- - Atomic under concurrency: it first takes a transaction lock of the subject (advisory
--   class 0x5551 'UQ', key a hash of the subject), so calls for one subject check one at a
--   time, each after the one before has committed or rolled back; the check is a statement
--   of its own, whose fresh snapshot (READ COMMITTED) sees that event.
-- - A REPEATABLE READ transaction keeps the snapshot it started with and would not see the
--   events recorded meanwhile: refused (SQLSTATE UQ002). SERIALIZABLE is safe: PostgreSQL
--   fails one of two conflicting calls with a serialization failure, to be retried.
CREATE OR REPLACE FUNCTION usage_enforce_hard_limits(p_user_id bigint, p_org_id bigint, p_kind text, p_at timestamptz, p_messages numeric, p_tokens numeric, p_bytes numeric, p_cost numeric)
RETURNS void
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

-- usage_grant(...): grants a subject `amount` more units of one metric per period kind, on
-- top of its plan, usable from `starts_at` until `expires_at`: a top-up, a bundle, a
-- goodwill credit. Returns the grant's id. Named arguments:
-- - p_user_id or p_org_id (exactly one): a user's personal quota, or an organization's;
-- - p_metric: requests | messages | tokens | bytes | cost;
-- - p_amount: above 0;
-- - p_period: 'day' or 'month' (default), the limit it extends;
-- - p_expires_at: after p_starts_at (default now());
-- - p_kind: '' (default) for the limit over all kinds, or one event kind's limit;
-- - p_reason: free text kept with the grant (an order number, a ticket).
-- Usage past the plan's limit of that metric, period kind and kind draws the subject's
-- active grants down, earliest expiry first (usage_grant_ledger). Refused with SQLSTATE
-- 22023 naming the argument, recording nothing, when an argument is wrong; 23503 when the
-- subject does not exist. The row keeps who granted (session_user) and when.
CREATE OR REPLACE FUNCTION usage_grant(p_user_id bigint DEFAULT NULL::bigint, p_org_id bigint DEFAULT NULL::bigint, p_metric text DEFAULT NULL::text, p_amount numeric DEFAULT NULL::numeric, p_period text DEFAULT 'month'::text, p_expires_at timestamptz DEFAULT NULL::timestamptz, p_starts_at timestamptz DEFAULT now(), p_reason text DEFAULT ''::text, p_kind text DEFAULT ''::text)
RETURNS bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
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
$$;

-- usage_grant_allocate(grants…, periods…, cuts…): THE drawdown rule, on arrays, reading no
-- table: what each grant gives in each period. usage_grant_ledger() (one subject, live or
-- counted) and usage_grant_settle() (every flagged subject at once, counted) gather the
-- arrays and call it.
-- - Grants g_id, g_from (starts_at), g_to (expiry, or void if earlier), g_amount: sorted
--   earliest expiry first, then by id: the order they are drawn in.
-- - Periods p_start, p_end, p_used (the usage of the metric and kind in the period),
--   p_limit (the plan's limit; NULL: unlimited, nothing drawn): sorted by start.
-- - Cuts c_since, c_at, c_used: for an instant `at` inside a period starting at `since`
--   where a grant starts or ends, the usage of the period before it. A cut missing here
--   counts as no usage before it.
-- In each period, usage up to the limit is the plan's; the usage past it in each stretch
-- between cuts is drawn from the grants active through that stretch, in order, each at most
-- what it has left of its amount; the rest is over the limit, drawn from nothing.
CREATE OR REPLACE FUNCTION usage_grant_allocate(g_id bigint[], g_from timestamptz[], g_to timestamptz[], g_amount numeric[], p_start timestamptz[], p_end timestamptz[], p_used numeric[], p_limit numeric[], c_since timestamptz[], c_at timestamptz[], c_used numeric[])
RETURNS TABLE(grant_id bigint, period_start timestamptz, period_end timestamptz, drawn numeric)
LANGUAGE plpgsql
IMMUTABLE
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

-- usage_grant_balance(user_id, org_id, metric, period, kind, at): the subject's grants of one
-- metric, period kind and event kind that are active at `at` (started, not expired, not
-- voided): `granted`, their amounts' total, and `balance`, what they have left after every
-- event the caller's snapshot sees (usage_grant_ledger, live), whenever it happened: at a
-- future `at` the balance carried over to then, and for an event recorded late (a past
-- `at`) never what later usage has drawn already. 0 and 0 when there is none.
CREATE OR REPLACE FUNCTION usage_grant_balance(p_user_id bigint, p_org_id bigint, p_metric text, p_period text, p_kind text, p_at timestamptz)
RETURNS TABLE(granted numeric, balance numeric)
LANGUAGE sql
STABLE
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

-- usage_grant_ledger(user_id, org_id, metric, period, kind, through, pending): what each grant
-- of one subject, metric, period kind and event kind ('' = all kinds) gave, per period, in
-- the periods that start at or before `through`. THE drawdown: the aggregate job records it
-- (usage_grant_draws, counted events only) and the answers compute it live (`pending`: with
-- the events not counted yet).
-- In each period, usage up to the plan's limit is the plan's; every unit past it is drawn,
-- at the instant it was used, from the grants active then (starts_at <= instant < expires_at,
-- and before voided_at), earliest expiry first (then the lower id), each at most its amount
-- over its whole life: what a grant has not given carries into later periods until it
-- expires. The period is cut at every grant's start, expiry and void inside it; the usage
-- before each cut comes from usage_grant_usage_before, so that the whole period is not read
-- again. It gathers the arrays usage_grant_allocate() (the rule itself) works on. A period whose metric has no limit (unlimited) draws nothing, and usage past the
-- limit with no active grant left is over the limit (`exceeded`), drawn from nothing.
-- The limit of an open period is the subject's plan's now; a closed period's is the one
-- recorded when it closed (usage_periods.limits).
CREATE OR REPLACE FUNCTION usage_grant_ledger(p_user_id bigint, p_org_id bigint, p_metric text, p_period text, p_kind text, p_through timestamptz, p_pending boolean)
RETURNS TABLE(grant_id bigint, period_start timestamptz, period_end timestamptz, drawn numeric)
LANGUAGE plpgsql
STABLE
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

-- usage_grant_settle(): brings the recorded drawdown of every subject with a grant not yet
-- settled (usage_grants.settled = false: new, voided, or its subject's books moved) up to
-- date with the books, set-based, in the transaction of the aggregate job (which holds the
-- watermark):
-- 1. the marks of the instants that cut its periods (usage_grant_marks: the counted usage of
--    the period before each grant's start, expiry or void inside a period that exists):
--    stale ones (a period a manual reset moved, an instant no grant has any more) deleted,
--    missing ones made from the raw events below the watermark, not set aside;
-- 2. usage_grant_draws, each grant's consumption per period, by usage_grant_allocate() (the
--    rule usage_grant_ledger() applies) over the counted events alone, gathered for every
--    key at once: inserted, updated where it changed, deleted where it no longer holds;
-- 3. the grants it read marked settled, unless another transaction changed one meanwhile
--    (a void, committed while this ran): that one is settled by the next call.
-- Returns how many draw rows changed.
CREATE OR REPLACE FUNCTION usage_grant_settle()
RETURNS bigint
LANGUAGE plpgsql
-- Planned afresh each call: a plan cached for a few subjects is slow for a thousand (a generic
-- plan after five calls in one session made it four times slower).
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

-- usage_grant_usage_before(user_id, org_id, period, kind, metric, since, at, pending): how
-- much of `metric` the subject used in [since, at) (events of `kind`, or of every kind for
-- ''), where `since` starts the period of kind `period` that contains `at`: the usage before
-- a grant's start, expiry or void inside a period (usage_grant_ledger). Counted events come
-- from the mark the aggregate job keeps for that instant (usage_grant_marks, moved with the
-- watermark in one transaction); with `pending`, the events not counted yet are added. With
-- no mark yet (the instant is new), the raw events answer: those below the watermark and not
-- set aside, and with `pending` the rest.
CREATE OR REPLACE FUNCTION usage_grant_usage_before(p_user_id bigint, p_org_id bigint, p_period text, p_kind text, p_metric text, p_since timestamptz, p_at timestamptz, p_pending boolean)
RETURNS numeric
LANGUAGE plpgsql
STABLE
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

-- usage_limit_checks(user_id, org_id, kind, at, messages, tokens, bytes, cost): every limit of
-- the subject's plan that an event of `kind` at `at` with these amounts adds to (a limit over
-- all kinds or over `kind`; `requests` always, each event being one; the others when the
-- event's amount is above 0), with what is used now (usage_subject_status: every event the
-- snapshot sees), the event's amount, what the subject's active grants have left (`balance`)
-- and whether it fits: what the event takes past the plan's limit (all of it once the limit
-- is reached) is at most the balance, used + amount <= greatest(limit, used) + balance. So a
-- limit of 0 with no grant refuses every event that adds to its metric. What usage_record() enforces (hard
-- limits) and usage_check() answers (every limit).
CREATE OR REPLACE FUNCTION usage_limit_checks(p_user_id bigint, p_org_id bigint, p_kind text, p_at timestamptz, p_messages numeric, p_tokens numeric, p_bytes numeric, p_cost numeric)
RETURNS TABLE(metric text, period text, kind text, enforcement text, limit_value numeric, used numeric, amount numeric, fits boolean, period_end timestamptz, balance numeric)
LANGUAGE sql
STABLE
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

-- usage_subject_status(user_id, org_id, at): the quota state of one subject (a user's
-- personal usage: (user, 0); an organization's: (0, org)) at `at`, the body of quota_status()
-- and org_quota_status(). One row per metric and period kind over all event kinds, and one
-- per kind-scoped limit of the subject's plan:
-- - `used`: every event of the period containing `at` that the caller's snapshot sees,
--   whether `aggregate` has counted it or not: the period's totals (usage_periods,
--   usage_period_kind_totals) plus the subject's events not yet counted
--   (usage_subject_pending), each event once.
-- - the period: the subject's open or closed period containing `at`, or, where none has
--   been opened yet, its natural period after any earlier one.
-- - `limit_value` (NULL: unlimited) and `enforcement` (`soft` or `hard`; NULL when unlimited).
-- - `granted` and `grant_remaining`: the subject's grants for that metric, period kind and
--   kind active at `at`, and what they have left after every event the caller sees, later
--   ones included (usage_grant_balance; 0 and 0 without any).
-- - `remaining`: what the plan has left plus what the grants have; `exceeded`: the plan's
--   limit is reached and the grants are used up; `percent`: of the plan's limit.
-- No row when the subject is not in usage_subjects. STABLE: every statement reads one
-- snapshot, so the totals and the watermark that splits counted from pending agree.
CREATE OR REPLACE FUNCTION usage_subject_status(p_user_id bigint, p_org_id bigint, p_at timestamptz)
RETURNS TABLE(metric text, period text, kind text, used numeric, limit_value numeric, remaining numeric, unlimited boolean, exceeded boolean, percent numeric, period_start timestamptz, period_end timestamptz, enforcement text, granted numeric, grant_remaining numeric)
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
    grant_keys text[];
BEGIN
    SELECT su.timezone, su.billing_anchor_day, su.plan_id INTO p_tz, p_anchor, p_plan
      FROM usage_subjects su
     WHERE su.user_id = p_user_id AND su.org_id = p_org_id;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- The limits the subject has grants on ('metric/period/kind'): only those read them.
    SELECT array_agg(DISTINCT g.metric || '/' || g.period || '/' || g.kind) INTO grant_keys
      FROM usage_grants g WHERE g.user_id = p_user_id AND g.org_id = p_org_id;
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
            -- Nothing counted yet in this period: its natural bounds, after any earlier one.
            b := usage_period_bounds(p_tz, p_anchor, per, p_at);
            SELECT t.period_start, t.period_end INTO p_from, p_to
              FROM usage_period_between(b.period_start, b.period_end, c_end, NULL) t;
        END IF;
        -- The five totals over all kinds, then one row per kind-scoped limit: UNION ALL and one
        -- small sort, no de-duplication. Each is the counted total plus the pending events.
        RETURN QUERY
        WITH pending AS MATERIALIZED (
            SELECT e.kind, count(*)::numeric AS requests, sum(e.messages)::numeric AS messages,
                   sum(e.tokens)::numeric AS tokens, sum(e.bytes)::numeric AS bytes,
                   sum(e.cost) AS cost
              FROM usage_subject_pending(p_user_id, p_org_id, p_from, p_to) e
             GROUP BY e.kind
        ), pending_all AS (
            SELECT COALESCE(sum(requests), 0) AS requests, COALESCE(sum(messages), 0) AS messages,
                   COALESCE(sum(tokens), 0) AS tokens, COALESCE(sum(bytes), 0) AS bytes,
                   COALESCE(sum(cost), 0) AS cost
              FROM pending
        )
        SELECT x.metric, per, x.kind, x.used, x.limit_value,
               CASE WHEN x.limit_value IS NOT NULL
                    THEN GREATEST(x.limit_value - x.used, 0) + COALESCE(gb.balance, 0) END,
               x.limit_value IS NULL,
               COALESCE(x.used >= x.limit_value AND COALESCE(gb.balance, 0) <= 0, false),
               CASE WHEN x.limit_value IS NULL THEN NULL
                    WHEN x.limit_value = 0 THEN 100::numeric
                    ELSE round(x.used * 100 / x.limit_value, 2) END,
               p_from, p_to, x.enforcement,
               COALESCE(gb.granted, 0), COALESCE(gb.balance, 0)
          FROM (SELECT m.metric, ''::text AS kind,
                       CASE WHEN NOT known THEN 0::numeric ELSE m.used END + m.pending AS used,
                       l.max_value AS limit_value, l.enforcement
                  FROM pending_all pa
                 CROSS JOIN LATERAL (VALUES ('bytes', c_bytes::numeric, pa.bytes),
                                            ('cost', c_cost, pa.cost),
                                            ('messages', c_messages::numeric, pa.messages),
                                            ('requests', c_requests::numeric, pa.requests),
                                            ('tokens', c_tokens::numeric, pa.tokens))
                       AS m (metric, used, pending)
                  LEFT JOIN plan_limits l
                    ON l.plan_id = p_plan AND l.period = per AND l.kind = '' AND l.metric = m.metric
                UNION ALL
                SELECT l.metric, l.kind,
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
                  FROM plan_limits l
                  LEFT JOIN usage_period_kind_totals k
                    ON known AND k.user_id = p_user_id AND k.org_id = p_org_id AND k.period = per
                   AND k.period_start = p_from AND k.kind = l.kind
                  LEFT JOIN pending pk ON pk.kind = l.kind
                 WHERE l.plan_id = p_plan AND l.period = per AND l.kind <> '') AS x
          -- Only for a limit the subject has grants on: the others pay one index probe per call.
          LEFT JOIN LATERAL (SELECT b.granted, b.balance
                               FROM usage_grant_balance(p_user_id, p_org_id, x.metric, per, x.kind, p_at) b
                              WHERE x.metric || '/' || per || '/' || x.kind = ANY (grant_keys)) gb ON true
         ORDER BY x.metric, x.kind;
    END LOOP;
END;
$$;

-- usage_void_grant(id, reason): ends a grant now: what it has not given by now it never
-- gives; what it gave stays drawn. The row stays, with who voided it, when and why. Refused
-- (SQLSTATE 22023, nothing changed) for an unknown grant or one voided already; a grant
-- voided before it starts never gives anything.
CREATE OR REPLACE FUNCTION usage_void_grant(p_grant_id bigint, p_reason text DEFAULT ''::text)
RETURNS timestamptz
LANGUAGE plpgsql
SET search_path FROM CURRENT
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
