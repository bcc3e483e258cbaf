-- Back to the period step of 2026-11-29-000015_org_periods and the foreign key of the
-- per-kind totals (per-kind rows whose period is gone are dropped first).
ALTER TABLE token_usage_daily RESET (fillfactor);
ALTER TABLE usage_periods RESET (fillfactor);
ALTER TABLE usage_period_kind_totals RESET (fillfactor);
DROP TRIGGER usage_periods_delete_kind_totals ON usage_periods;
DROP FUNCTION usage_periods_delete_kind_totals();
DELETE FROM usage_period_kind_totals k
 WHERE NOT EXISTS (SELECT 1 FROM usage_periods up
                    WHERE up.user_id = k.user_id AND up.org_id = k.org_id
                      AND up.period = k.period AND up.period_start = k.period_start);
ALTER TABLE usage_period_kind_totals
    ADD CONSTRAINT usage_period_kind_totals_period_fkey FOREIGN KEY (user_id, org_id, period, period_start)
        REFERENCES usage_periods (user_id, org_id, period, period_start) ON DELETE CASCADE;

-- Adds the events of the temporary table `aggregate_batch` (one row per new event, filled by
-- the aggregate job in its transaction: user_id, org_id, kind, created_at, messages, tokens,
-- bytes, cost, ...) into the period rows of their subject that contain them, open or closed,
-- opening a period where none contains an event; returns the number of period rows opened.
--
-- 1. The subjects of the batch, with their zone and anchor: a user's (users row) for
--    personal events, the organization's (organizations row) for events in one; an unknown
--    zone or a missing row counts in UTC with calendar months.
-- 2. The batch is grouped by (subject, local day, kind): one pass over the events.
-- 3. The natural period of each local day comes from usage_period_dates and
--    usage_local_midnight, once per distinct (zone, anchor, local day) and (zone, date).
-- 4. A span — a subject's events in one natural period — is placed among the subject's
--    periods near the batch with one window over both (no probe per row): inside the period
--    that contains its first event; or in a new period, the natural one trimmed by its
--    neighbours; or, when a boundary cuts the span, by the exact per-event path.
-- 5. The span totals go into usage_periods (new periods inserted with them) and the
--    grouped ones into usage_period_kind_totals.
-- JIT is off: compiling these short statements costs more than running them.
CREATE OR REPLACE FUNCTION usage_periods_add_batch() RETURNS bigint
LANGUAGE plpgsql SET jit = off AS $$
DECLARE
    opened bigint := 0;
BEGIN
    DROP TABLE IF EXISTS usage_batch_subjects, usage_batch_days, usage_batch_natural,
                         usage_batch_placed, usage_batch_exact;
    -- Each zone name is checked once (the check is a subtransaction), not once per subject.
    CREATE TEMP TABLE usage_batch_subjects ON COMMIT DROP AS
    WITH subjects AS (
        SELECT DISTINCT CASE WHEN org_id IS NULL THEN user_id ELSE 0 END AS user_id,
                        COALESCE(org_id, 0) AS org_id
          FROM aggregate_batch
    ), declared AS (
        SELECT s.user_id, s.org_id, COALESCE(o.timezone, u.timezone) AS timezone,
               COALESCE(o.billing_anchor_day, u.billing_anchor_day, 1) AS anchor
          FROM subjects s
          LEFT JOIN users u ON s.org_id = 0 AND u.id = s.user_id
          LEFT JOIN organizations o ON s.org_id > 0 AND o.id = s.org_id
    ), zones AS (
        SELECT t.timezone, CASE WHEN usage_timezone_is_valid(t.timezone) THEN t.timezone ELSE 'UTC' END AS zone
          FROM (SELECT DISTINCT timezone FROM declared) t
    )
    SELECT d.user_id, d.org_id, d.anchor, COALESCE(z.zone, 'UTC') AS zone
      FROM declared d
      LEFT JOIN zones z ON z.timezone = d.timezone;
    ANALYZE usage_batch_subjects;

    CREATE TEMP TABLE usage_batch_days ON COMMIT DROP AS
    SELECT z.user_id, z.org_id, z.zone, z.anchor, (b.created_at AT TIME ZONE z.zone)::date AS day,
           b.kind, count(*) AS requests, sum(b.messages) AS messages, sum(b.tokens) AS tokens,
           sum(b.bytes) AS bytes, sum(b.cost) AS cost,
           min(b.created_at) AS first_at, max(b.created_at) AS last_at
      FROM aggregate_batch b
      JOIN usage_batch_subjects z
        ON z.user_id = CASE WHEN b.org_id IS NULL THEN b.user_id ELSE 0 END
       AND z.org_id = COALESCE(b.org_id, 0)
     GROUP BY 1, 2, 3, 4, 5, 6;
    ANALYZE usage_batch_days;

    -- The natural day and month period of each local day, by zone and anchor: the bounds
    -- usage_period_bounds gives for the day's first instant, computed once per distinct
    -- (zone, anchor, day) from the same parts, the zone being checked already.
    CREATE TEMP TABLE usage_batch_natural ON COMMIT DROP AS
    WITH days AS (
        SELECT DISTINCT zone, anchor, day FROM usage_batch_days
    ), months AS (
        SELECT k.zone, k.anchor, k.day, m.start_date, m.end_date
          FROM days k
         CROSS JOIN LATERAL usage_period_dates(k.day, k.anchor, 'month') m
    ), midnights AS (
        SELECT x.zone, x.day, usage_local_midnight(x.day, x.zone) AS at
          FROM (SELECT zone, day FROM days UNION SELECT zone, day + 1 FROM days
                UNION SELECT zone, start_date FROM months UNION SELECT zone, end_date FROM months) x
    )
    SELECT k.zone, k.anchor, k.day, 'day' AS period, s.at AS period_start, e.at AS period_end
      FROM days k
      JOIN midnights s ON s.zone = k.zone AND s.day = k.day
      JOIN midnights e ON e.zone = k.zone AND e.day = k.day + 1
    UNION ALL
    SELECT m.zone, m.anchor, m.day, 'month', s.at, e.at
      FROM months m
      JOIN midnights s ON s.zone = m.zone AND s.day = m.start_date
      JOIN midnights e ON e.zone = m.zone AND e.day = m.end_date;
    ANALYZE usage_batch_natural;

    -- A span: a subject's events of one natural period, with their totals.
    CREATE TEMP TABLE usage_batch_placed ON COMMIT DROP AS
    WITH spans AS (
        SELECT d.user_id, d.org_id, n.period, n.period_start AS natural_start,
               n.period_end AS natural_end, min(d.first_at) AS first_at, max(d.last_at) AS last_at,
               sum(d.requests) AS requests, sum(d.messages) AS messages, sum(d.tokens) AS tokens,
               sum(d.bytes) AS bytes, sum(d.cost) AS cost
          FROM usage_batch_days d
          JOIN usage_batch_natural n ON n.zone = d.zone AND n.anchor = d.anchor AND n.day = d.day
         GROUP BY 1, 2, 3, 4, 5
    ), reach AS (
        -- A period is shorter than 32 days, so none starting earlier reaches the batch.
        SELECT user_id, org_id, period,
               min(LEAST(natural_start, first_at)) - interval '32 days' AS low,
               max(GREATEST(natural_end, last_at)) AS high
          FROM spans GROUP BY 1, 2, 3
    ), merged AS (
        SELECT up.user_id, up.org_id, up.period, up.period_start AS at, 0 AS ord, up.period_start,
               up.period_end, NULL::timestamptz AS natural_start, NULL::timestamptz AS natural_end,
               NULL::timestamptz AS first_at, NULL::timestamptz AS last_at,
               NULL::numeric AS requests, NULL::numeric AS messages, NULL::numeric AS tokens,
               NULL::numeric AS bytes, NULL::numeric AS cost
          FROM reach r
          JOIN usage_periods up ON up.user_id = r.user_id AND up.org_id = r.org_id
           AND up.period = r.period AND up.period_start >= r.low AND up.period_start <= r.high
        UNION ALL
        SELECT user_id, org_id, period, first_at, 1, NULL, NULL, natural_start, natural_end,
               first_at, last_at, requests, messages, tokens, bytes, cost
          FROM spans
    ), framed AS (
        -- Periods never overlap, so the greatest start and end before a span are those of
        -- the period that starts last before it.
        SELECT m.*, max(m.period_start) OVER before AS prev_start,
               max(m.period_end) OVER before AS prev_end,
               min(m.period_start) OVER after AS next_start
          FROM merged m
        WINDOW before AS (PARTITION BY m.user_id, m.org_id, m.period ORDER BY m.at, m.ord
                          ROWS UNBOUNDED PRECEDING),
               -- Growing frames only, in both directions: a frame that shrinks from the
               -- front makes min() rescan the rest of the partition for every row.
               after AS (PARTITION BY m.user_id, m.org_id, m.period ORDER BY m.at DESC, m.ord DESC
                         ROWS UNBOUNDED PRECEDING)
    ), trimmed AS (
        SELECT f.*, GREATEST(f.natural_start, f.prev_end) AS open_start,
               LEAST(f.natural_end, f.next_start) AS open_end
          FROM framed f
         WHERE f.ord = 1
    )
    SELECT t.user_id, t.org_id, t.period, t.natural_start,
           CASE WHEN t.prev_end > t.last_at THEN 'located'
                WHEN t.prev_end > t.first_at THEN 'exact'
                WHEN t.first_at >= t.open_start AND t.last_at < t.open_end THEN 'open'
                ELSE 'exact' END AS placement,
           CASE WHEN t.prev_end > t.first_at THEN t.prev_start ELSE t.open_start END AS period_start,
           CASE WHEN t.prev_end > t.first_at THEN t.prev_end ELSE t.open_end END AS period_end,
           t.requests, t.messages, t.tokens, t.bytes, t.cost
      FROM trimmed t;
    ANALYZE usage_batch_placed;

    -- New periods are inserted with their totals (one write per row). The ranges of new
    -- periods are disjoint and clear of every existing one: a conflict here would be a
    -- miscount, so it fails the transaction instead of being absorbed.
    INSERT INTO usage_periods (user_id, org_id, period, period_start, period_end, requests,
                               messages, tokens, bytes, cost)
    SELECT user_id, org_id, period, period_start, period_end, requests, messages, tokens, bytes, cost
      FROM usage_batch_placed
     WHERE placement = 'open';
    GET DIAGNOSTICS opened = ROW_COUNT;
    UPDATE usage_periods up
       SET requests = up.requests + s.requests,
           messages = up.messages + s.messages,
           tokens   = up.tokens + s.tokens,
           bytes    = up.bytes + s.bytes,
           cost     = up.cost + s.cost
      FROM (SELECT user_id, org_id, period, period_start, sum(requests) AS requests,
                   sum(messages) AS messages, sum(tokens) AS tokens, sum(bytes) AS bytes,
                   sum(cost) AS cost
              FROM usage_batch_placed WHERE placement = 'located' GROUP BY 1, 2, 3, 4) s
     WHERE up.user_id = s.user_id AND up.org_id = s.org_id AND up.period = s.period
       AND up.period_start = s.period_start;

    -- Per-kind totals: a day span of a new period is one row per kind as grouped; months and
    -- existing periods are summed and added.
    INSERT INTO usage_period_kind_totals
           (user_id, org_id, period, period_start, kind, requests, messages, tokens, bytes, cost)
    SELECT d.user_id, d.org_id, 'day', p.period_start, d.kind, d.requests, d.messages, d.tokens,
           d.bytes, d.cost
      FROM usage_batch_days d
      JOIN usage_batch_natural n ON n.zone = d.zone AND n.anchor = d.anchor AND n.day = d.day
       AND n.period = 'day'
      JOIN usage_batch_placed p ON p.user_id = d.user_id AND p.org_id = d.org_id
       AND p.period = 'day' AND p.natural_start = n.period_start AND p.placement = 'open';
    INSERT INTO usage_period_kind_totals AS t
           (user_id, org_id, period, period_start, kind, requests, messages, tokens, bytes, cost)
    SELECT d.user_id, d.org_id, p.period, p.period_start, d.kind, sum(d.requests), sum(d.messages),
           sum(d.tokens), sum(d.bytes), sum(d.cost)
      FROM usage_batch_days d
      JOIN usage_batch_natural n ON n.zone = d.zone AND n.anchor = d.anchor AND n.day = d.day
      JOIN usage_batch_placed p ON p.user_id = d.user_id AND p.org_id = d.org_id
       AND p.period = n.period AND p.natural_start = n.period_start
       AND (p.placement = 'located' OR p.placement = 'open' AND p.period = 'month')
     GROUP BY 1, 2, 3, 4, 5
    ON CONFLICT (user_id, org_id, period, period_start, kind) DO UPDATE
       SET requests = t.requests + EXCLUDED.requests,
           messages = t.messages + EXCLUDED.messages,
           tokens   = t.tokens + EXCLUDED.tokens,
           bytes    = t.bytes + EXCLUDED.bytes,
           cost     = t.cost + EXCLUDED.cost;

    IF EXISTS (SELECT 1 FROM usage_batch_placed WHERE placement = 'exact') THEN
        CREATE TEMP TABLE usage_batch_exact ON COMMIT DROP AS
        SELECT z.user_id, z.org_id, n.period, b.created_at, b.kind, b.messages, b.tokens,
               b.bytes, b.cost
          FROM aggregate_batch b
          JOIN usage_batch_subjects z
            ON z.user_id = CASE WHEN b.org_id IS NULL THEN b.user_id ELSE 0 END
           AND z.org_id = COALESCE(b.org_id, 0)
          JOIN usage_batch_natural n ON n.zone = z.zone AND n.anchor = z.anchor
           AND n.day = (b.created_at AT TIME ZONE z.zone)::date
          JOIN usage_batch_placed p ON p.user_id = z.user_id AND p.org_id = z.org_id
           AND p.period = n.period AND p.natural_start = n.period_start AND p.placement = 'exact'
         WHERE (z.user_id, z.org_id) IN (SELECT user_id, org_id FROM usage_batch_placed
                                          WHERE placement = 'exact');
        opened := opened + usage_periods_add_exact();
    END IF;

    DROP TABLE IF EXISTS usage_batch_subjects, usage_batch_days, usage_batch_natural,
                         usage_batch_placed, usage_batch_exact;
    RETURN opened;
END;
$$;
