-- Quota periods: the one implementation of period arithmetic (usage_period_bounds), the
-- usage_periods ledger with per-kind totals, the step that adds aggregated events into
-- periods, and quota_status() for applications.

-- True when PostgreSQL knows the time zone name. An unknown name must not make period
-- arithmetic fail for every user: callers treat it as UTC and report the user.
CREATE FUNCTION usage_timezone_is_valid(tz text) RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
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

-- The local dates on which the period containing local date `d` starts and ends.
CREATE FUNCTION usage_period_dates(d date, anchor_day int, period text,
                                   OUT start_date date, OUT end_date date)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    m date := date_trunc('month', d)::date;
BEGIN
    IF period = 'day' THEN
        start_date := d;
        end_date := d + 1;
    ELSIF period = 'month' THEN
        IF usage_anchor_date(m, anchor_day) > d THEN
            m := (m - interval '1 month')::date;
        END IF;
        start_date := usage_anchor_date(m, anchor_day);
        end_date := usage_anchor_date((m + interval '1 month')::date, anchor_day);
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
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
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
-- the aggregate job in its transaction) into the period rows that contain them, open or
-- closed, opening a period where none contains an event. A new period gets its natural
-- bounds, trimmed so it never overlaps a neighbour (after a manual reset or a change of
-- time zone). Returns the number of period rows opened.
CREATE FUNCTION usage_periods_add_batch() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    opened bigint;
BEGIN
    WITH ev AS (
        SELECT b.user_id, p.period, b.created_at, u.timezone, u.billing_anchor_day
          FROM aggregate_batch b
          LEFT JOIN users u ON u.id = b.user_id
         CROSS JOIN (VALUES ('day'), ('month')) AS p (period)
    ), homeless AS (
        SELECT ev.*
          FROM ev
         WHERE NOT EXISTS (SELECT 1 FROM usage_periods up
                            WHERE up.user_id = ev.user_id AND up.period = ev.period
                              AND up.period_start <= ev.created_at AND up.period_end > ev.created_at)
    ), bounded AS (
        SELECT DISTINCT h.user_id, h.period,
               GREATEST(b.period_start, prev.period_end) AS period_start,
               LEAST(b.period_end, next.period_start) AS period_end
          FROM homeless h
         CROSS JOIN LATERAL usage_period_bounds(h.timezone, h.billing_anchor_day, h.period, h.created_at) b
          LEFT JOIN LATERAL (SELECT up.period_end FROM usage_periods up
                              WHERE up.user_id = h.user_id AND up.period = h.period
                                AND up.period_start <= h.created_at
                              ORDER BY up.period_start DESC LIMIT 1) prev ON true
          LEFT JOIN LATERAL (SELECT up.period_start FROM usage_periods up
                              WHERE up.user_id = h.user_id AND up.period = h.period
                                AND up.period_start > h.created_at
                              ORDER BY up.period_start LIMIT 1) next ON true
    ), inserted AS (
        INSERT INTO usage_periods (user_id, period, period_start, period_end)
        SELECT user_id, period, period_start, period_end FROM bounded
        ON CONFLICT DO NOTHING
        RETURNING 1
    )
    SELECT count(*) INTO opened FROM inserted;

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

    RETURN opened;
END;
$$;

-- Quota state of one user at `at` (default now), for applications to call before expensive
-- work: one row per metric and period kind over all event kinds, plus one per kind-scoped
-- limit of the user's plan. `used` comes from the period ledger (events are counted once
-- aggregated); no limit row means unlimited. Indexed lookups only. No rows for an unknown user.
CREATE FUNCTION quota_status(p_user_id bigint, p_at timestamptz DEFAULT now())
RETURNS TABLE (metric text, period text, kind text, used numeric, limit_value numeric,
               remaining numeric, unlimited boolean, exceeded boolean, percent numeric,
               period_start timestamptz, period_end timestamptz)
LANGUAGE sql STABLE AS $$
    WITH u AS (
        SELECT id, timezone, billing_anchor_day, plan_id FROM users WHERE id = p_user_id
    ), periods AS (
        SELECT p.period,
               COALESCE(cur.period_start, GREATEST(b.period_start, prev.period_end)) AS period_start,
               COALESCE(cur.period_end, b.period_end) AS period_end,
               cur.period_start IS NOT NULL AS recorded,
               cur.requests, cur.messages, cur.tokens, cur.bytes, cur.cost
          FROM u
         CROSS JOIN (VALUES ('day'), ('month')) AS p (period)
         CROSS JOIN LATERAL usage_period_bounds(u.timezone, u.billing_anchor_day, p.period, p_at) b
          LEFT JOIN LATERAL (SELECT up.* FROM usage_periods up
                              WHERE up.user_id = u.id AND up.period = p.period
                                AND up.period_start <= p_at
                              ORDER BY up.period_start DESC LIMIT 1) last ON true
          LEFT JOIN LATERAL (SELECT last.* WHERE last.period_end > p_at) cur ON true
          LEFT JOIN LATERAL (SELECT last.period_end WHERE last.period_end <= p_at) prev ON true
    ), wanted AS (
        SELECT m.metric, p.period, '' AS kind FROM (VALUES ('requests'), ('messages'), ('tokens'),
               ('bytes'), ('cost')) AS m (metric) CROSS JOIN (VALUES ('day'), ('month')) AS p (period)
        UNION
        SELECT l.metric, l.period, l.kind FROM u JOIN plan_limits l ON l.plan_id = u.plan_id
    ), measured AS (
        SELECT w.metric, w.period, w.kind, p.period_start, p.period_end,
               COALESCE(CASE WHEN w.kind = '' THEN
                   CASE w.metric WHEN 'requests' THEN p.requests::numeric WHEN 'messages' THEN p.messages::numeric
                                 WHEN 'tokens' THEN p.tokens::numeric WHEN 'bytes' THEN p.bytes::numeric
                                 ELSE p.cost END
               ELSE
                   (SELECT CASE w.metric WHEN 'requests' THEN k.requests::numeric WHEN 'messages' THEN k.messages::numeric
                                         WHEN 'tokens' THEN k.tokens::numeric WHEN 'bytes' THEN k.bytes::numeric
                                         ELSE k.cost END
                      FROM usage_period_kind_totals k
                     WHERE p.recorded AND k.user_id = p_user_id AND k.period = w.period
                       AND k.period_start = p.period_start AND k.kind = w.kind)
               END, 0) AS used,
               (SELECT l.max_value FROM u JOIN plan_limits l ON l.plan_id = u.plan_id
                 WHERE l.metric = w.metric AND l.period = w.period AND l.kind = w.kind) AS limit_value
          FROM wanted w JOIN periods p ON p.period = w.period
    )
    SELECT metric, period, kind, used, limit_value,
           CASE WHEN limit_value IS NOT NULL THEN GREATEST(limit_value - used, 0) END AS remaining,
           limit_value IS NULL AS unlimited,
           COALESCE(used >= limit_value, false) AS exceeded,
           CASE WHEN limit_value IS NULL THEN NULL
                WHEN limit_value = 0 THEN 100
                ELSE round(used * 100 / limit_value, 2) END AS percent,
           period_start, period_end
      FROM measured
     ORDER BY period, metric, kind
$$;
