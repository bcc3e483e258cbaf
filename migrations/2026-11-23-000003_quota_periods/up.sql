-- Quota periods: the one implementation of period arithmetic (usage_period_bounds), the
-- usage_periods ledger with per-kind totals, the step that adds aggregated events into
-- periods, and quota_status() for applications.

-- True when PostgreSQL knows the time zone name. An unknown name must not make period
-- arithmetic fail for every user: callers treat it as UTC and report the user. PARALLEL
-- UNSAFE: the exception block is a subtransaction, which cannot start while a parallel
-- query runs (in a worker or in the leader).
CREATE FUNCTION usage_timezone_is_valid(tz text) RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL UNSAFE AS $$
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

-- The first instant of local date `d` in zone `tz`. When local midnight happens twice (a
-- clock set back to 00:00), the earlier one; when it does not exist (a clock set forward at
-- 00:00), the instant of the change. PostgreSQL alone would pick the later of two.
CREATE FUNCTION usage_local_midnight(d date, tz text) RETURNS timestamptz
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
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

-- The anchor date in the month starting on `month_start`: day `anchor_day`, clamped to the
-- month's last day (31 -> Feb 28/29, Apr 30).
CREATE FUNCTION usage_anchor_date(month_start date, anchor_day int) RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT month_start + (LEAST(COALESCE(anchor_day, 1),
                                EXTRACT(day FROM month_start + interval '1 month' - interval '1 day')::int) - 1)
$$;

-- The local dates on which the period containing local date `d` starts and ends. (The anchor
-- arithmetic of usage_anchor_date is written out: this runs once per user at every rollover.)
CREATE FUNCTION usage_period_dates(d date, anchor_day int, period text,
                                   OUT start_date date, OUT end_date date)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
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

-- THE period arithmetic. The period (`day` or `month`) containing instant `at` for a user
-- in zone `tz` whose month starts on `anchor_day` (NULL = the 1st): from local midnight to
-- the next local midnight, or from local midnight of the anchor date to that of the next
-- anchor date. Consecutive periods tile time. An unknown zone is treated as UTC.
CREATE FUNCTION usage_period_bounds(tz text, anchor_day int, period text, at timestamptz,
                                    OUT period_start timestamptz, OUT period_end timestamptz)
LANGUAGE plpgsql STABLE PARALLEL UNSAFE AS $$
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

-- The quota ledger: one row per (user, period kind, period start). Opened lazily when the
-- first event of a period is aggregated (or as the successor of an active closed period);
-- closed by reset-daily / reset-monthly at period_end (rollover) or by a manual reset.
-- Periods of one user and period kind never overlap.
CREATE TABLE usage_periods (
    user_id      bigint      NOT NULL,
    period       text        NOT NULL CONSTRAINT usage_periods_period_check CHECK (period IN ('day', 'month')),
    period_start timestamptz NOT NULL,
    period_end   timestamptz NOT NULL,
    status       text        NOT NULL DEFAULT 'open'
                             CONSTRAINT usage_periods_status_check CHECK (status IN ('open', 'closed')),
    close_reason text        CONSTRAINT usage_periods_close_reason_check CHECK (close_reason IN ('rollover', 'manual')),
    -- Totals of the events in [period_start, period_end); requests = number of events.
    requests     bigint      NOT NULL DEFAULT 0,
    messages     bigint      NOT NULL DEFAULT 0,
    tokens       bigint      NOT NULL DEFAULT 0,
    bytes        bigint      NOT NULL DEFAULT 0,
    cost         numeric     NOT NULL DEFAULT 0,
    opened_at    timestamptz NOT NULL DEFAULT now(),
    closed_at    timestamptz,
    -- Snapshot taken at close: the user's plan and that plan's limits for this period kind,
    -- [{"metric": "tokens", "kind": "", "max_value": 100000}, ...] (no entry = unlimited).
    plan_id      bigint,
    limits       jsonb,
    PRIMARY KEY (user_id, period, period_start),
    CONSTRAINT usage_periods_bounds_check CHECK (period_end > period_start),
    CONSTRAINT usage_periods_closed_has_reason CHECK ((status = 'closed') = (close_reason IS NOT NULL))
);
-- What the reset jobs look for: open periods that have ended.
CREATE INDEX usage_periods_open_end_idx ON usage_periods (period, period_end) WHERE status = 'open';

-- Per-kind totals of a period (what kind-scoped limits are checked against).
CREATE TABLE usage_period_kind_totals (
    user_id      bigint      NOT NULL,
    period       text        NOT NULL,
    period_start timestamptz NOT NULL,
    kind         text        NOT NULL,
    requests     bigint      NOT NULL DEFAULT 0,
    messages     bigint      NOT NULL DEFAULT 0,
    tokens       bigint      NOT NULL DEFAULT 0,
    bytes        bigint      NOT NULL DEFAULT 0,
    cost         numeric     NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, period, period_start, kind),
    FOREIGN KEY (user_id, period, period_start)
        REFERENCES usage_periods (user_id, period, period_start) ON DELETE CASCADE
);

-- Adds the events of the temporary table `aggregate_batch` (one row per new event, filled by
-- the aggregate job in its transaction: user_id, kind, created_at, messages, tokens, bytes,
-- cost, ...) into the period rows that contain them, open or closed, opening a period where
-- none contains an event. A new period gets its natural bounds (usage_period_bounds), trimmed
-- so it never overlaps a neighbour (after a manual reset or a change of time zone). Bounds
-- are computed once per user, period kind and local day, not per event. Returns the number
-- of period rows opened. JIT is off: compiling these short statements costs more (about half a
-- second each) than running them.
CREATE FUNCTION usage_periods_add_batch() RETURNS bigint
LANGUAGE plpgsql SET jit = off AS $$
DECLARE
    opened bigint := 0;
    added  bigint;
BEGIN
    DROP TABLE IF EXISTS usage_batch_users, usage_batch_homeless;
    CREATE TEMP TABLE usage_batch_users ON COMMIT DROP AS
    SELECT b.user_id, u.timezone, u.billing_anchor_day,
           CASE WHEN usage_timezone_is_valid(u.timezone) THEN u.timezone ELSE 'UTC' END AS zone
      FROM (SELECT DISTINCT user_id FROM aggregate_batch) b
      LEFT JOIN users u ON u.id = b.user_id;
    ANALYZE usage_batch_users;

    LOOP
        DROP TABLE IF EXISTS usage_batch_homeless;
        -- Events no period contains yet, one representative (the earliest) per local day.
        CREATE TEMP TABLE usage_batch_homeless ON COMMIT DROP AS
        SELECT b.user_id, p.period, min(b.created_at) AS first_at
          FROM aggregate_batch b
          JOIN usage_batch_users z ON z.user_id = b.user_id
         CROSS JOIN (VALUES ('day'), ('month')) AS p (period)
         WHERE NOT EXISTS (SELECT 1 FROM usage_periods up
                            WHERE up.user_id = b.user_id AND up.period = p.period
                              AND up.period_start <= b.created_at AND up.period_end > b.created_at)
         GROUP BY b.user_id, p.period, (b.created_at AT TIME ZONE z.zone)::date;
        EXIT WHEN NOT EXISTS (SELECT 1 FROM usage_batch_homeless);
        ANALYZE usage_batch_homeless;

        WITH bounded AS (
            SELECT DISTINCT h.user_id, h.period,
                   GREATEST(b.period_start, prev.period_end) AS period_start,
                   LEAST(b.period_end, nxt.period_start) AS period_end
              FROM usage_batch_homeless h
              JOIN usage_batch_users z ON z.user_id = h.user_id
             CROSS JOIN LATERAL usage_period_bounds(z.zone, z.billing_anchor_day, h.period, h.first_at) b
              LEFT JOIN LATERAL (SELECT up.period_end FROM usage_periods up
                                  WHERE up.user_id = h.user_id AND up.period = h.period
                                    AND up.period_start <= h.first_at
                                  ORDER BY up.period_start DESC LIMIT 1) prev ON true
              LEFT JOIN LATERAL (SELECT up.period_start FROM usage_periods up
                                  WHERE up.user_id = h.user_id AND up.period = h.period
                                    AND up.period_start > h.first_at
                                  ORDER BY up.period_start LIMIT 1) nxt ON true
        ), inserted AS (
            INSERT INTO usage_periods (user_id, period, period_start, period_end)
            SELECT user_id, period, period_start, period_end FROM bounded
            ON CONFLICT DO NOTHING
            RETURNING 1
        )
        SELECT count(*) INTO added FROM inserted;
        IF added = 0 THEN
            -- Cannot happen while periods never overlap; refuse rather than miscount.
            RAISE EXCEPTION 'usage_periods_add_batch: events of user % at % fit no period and none can be opened',
                  (SELECT user_id FROM usage_batch_homeless LIMIT 1), (SELECT first_at FROM usage_batch_homeless LIMIT 1);
        END IF;
        opened := opened + added;
    END LOOP;

    WITH located AS (
        SELECT b.user_id, p.period, up.period_start, b.kind,
               count(*) AS requests, sum(b.messages) AS messages, sum(b.tokens) AS tokens,
               sum(b.bytes) AS bytes, sum(b.cost) AS cost
          FROM aggregate_batch b
         CROSS JOIN (VALUES ('day'), ('month')) AS p (period)
         CROSS JOIN LATERAL (SELECT up.period_start FROM usage_periods up
                              WHERE up.user_id = b.user_id AND up.period = p.period
                                AND up.period_start <= b.created_at
                              ORDER BY up.period_start DESC LIMIT 1) up
         GROUP BY 1, 2, 3, 4
    ), per_kind AS (
        INSERT INTO usage_period_kind_totals AS t
               (user_id, period, period_start, kind, requests, messages, tokens, bytes, cost)
        SELECT user_id, period, period_start, kind, requests, messages, tokens, bytes, cost
          FROM located
        ON CONFLICT (user_id, period, period_start, kind) DO UPDATE
           SET requests = t.requests + EXCLUDED.requests,
               messages = t.messages + EXCLUDED.messages,
               tokens   = t.tokens + EXCLUDED.tokens,
               bytes    = t.bytes + EXCLUDED.bytes,
               cost     = t.cost + EXCLUDED.cost
    )
    UPDATE usage_periods up
       SET requests = up.requests + s.requests,
           messages = up.messages + s.messages,
           tokens   = up.tokens + s.tokens,
           bytes    = up.bytes + s.bytes,
           cost     = up.cost + s.cost
      FROM (SELECT user_id, period, period_start, sum(requests) AS requests, sum(messages) AS messages,
                   sum(tokens) AS tokens, sum(bytes) AS bytes, sum(cost) AS cost
              FROM located GROUP BY 1, 2, 3) s
     WHERE up.user_id = s.user_id AND up.period = s.period AND up.period_start = s.period_start;

    DROP TABLE usage_batch_users, usage_batch_homeless;
    RETURN opened;
END;
$$;

-- Quota state of one user at `at` (default now), for applications to call before expensive
-- work: one row per metric and period kind over all event kinds, plus one per kind-scoped
-- limit of the user's plan. `used` comes from the period ledger (events are counted once
-- aggregated); no limit row means unlimited. Lookups by primary key only, no scan of events;
-- PL/pgSQL so that its plans are prepared once per session. No rows for an unknown user.
CREATE FUNCTION quota_status(p_user_id bigint, p_at timestamptz DEFAULT now())
RETURNS TABLE (metric text, period text, kind text, used numeric, limit_value numeric,
               remaining numeric, unlimited boolean, exceeded boolean, percent numeric,
               period_start timestamptz, period_end timestamptz)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
    u      record;
    cur    record;
    b      record;
    per    text;
    p_from timestamptz;
    p_to   timestamptz;
    known  boolean;
BEGIN
    SELECT usr.timezone, usr.billing_anchor_day, usr.plan_id INTO u FROM users usr WHERE usr.id = p_user_id;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    FOREACH per IN ARRAY ARRAY['day', 'month'] LOOP
        -- The latest period starting at or before `at`: the current one if it has not ended.
        SELECT up.period_start, up.period_end, up.requests, up.messages, up.tokens, up.bytes, up.cost
          INTO cur
          FROM usage_periods up
         WHERE up.user_id = p_user_id AND up.period = per AND up.period_start <= p_at
         ORDER BY up.period_start DESC
         LIMIT 1;
        known := FOUND AND cur.period_end > p_at;
        IF known THEN
            p_from := cur.period_start;
            p_to := cur.period_end;
        ELSE
            -- No events yet in this period: its natural bounds, after any earlier period.
            b := usage_period_bounds(u.timezone, u.billing_anchor_day, per, p_at);
            p_from := GREATEST(b.period_start, cur.period_end);
            p_to := b.period_end;
        END IF;
        RETURN QUERY
        WITH wanted AS (
            SELECT m.metric, ''::text AS kind
              FROM unnest(ARRAY['bytes', 'cost', 'messages', 'requests', 'tokens']) AS m (metric)
            UNION
            SELECT l.metric, l.kind FROM plan_limits l WHERE l.plan_id = u.plan_id AND l.period = per
        ), measured AS (
            SELECT w.metric, w.kind,
                   CASE WHEN NOT known THEN 0
                        WHEN w.kind = '' THEN
                            CASE w.metric WHEN 'requests' THEN cur.requests::numeric
                                          WHEN 'messages' THEN cur.messages::numeric
                                          WHEN 'tokens' THEN cur.tokens::numeric
                                          WHEN 'bytes' THEN cur.bytes::numeric
                                          ELSE cur.cost END
                        ELSE COALESCE(
                            CASE w.metric WHEN 'requests' THEN k.requests::numeric
                                          WHEN 'messages' THEN k.messages::numeric
                                          WHEN 'tokens' THEN k.tokens::numeric
                                          WHEN 'bytes' THEN k.bytes::numeric
                                          ELSE k.cost END, 0)
                   END AS used,
                   l.max_value AS limit_value
              FROM wanted w
              LEFT JOIN usage_period_kind_totals k
                ON known AND w.kind <> '' AND k.user_id = p_user_id AND k.period = per
               AND k.period_start = p_from AND k.kind = w.kind
              LEFT JOIN plan_limits l
                ON l.plan_id = u.plan_id AND l.metric = w.metric AND l.period = per AND l.kind = w.kind
        )
        SELECT x.metric, per, x.kind, x.used, x.limit_value,
               CASE WHEN x.limit_value IS NOT NULL THEN GREATEST(x.limit_value - x.used, 0) END,
               x.limit_value IS NULL,
               COALESCE(x.used >= x.limit_value, false),
               CASE WHEN x.limit_value IS NULL THEN NULL
                    WHEN x.limit_value = 0 THEN 100::numeric
                    ELSE round(x.used * 100 / x.limit_value, 2) END,
               p_from, p_to
          FROM measured x
         ORDER BY x.metric, x.kind;
    END LOOP;
END;
$$;
