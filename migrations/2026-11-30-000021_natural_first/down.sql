-- Back to the period step and the open-period index of 2026-11-29-000020_lean_periods.

DROP INDEX usage_periods_open_end_idx;
CREATE INDEX usage_periods_open_end_idx ON usage_periods (period, period_end) WHERE status = 'open';

CREATE OR REPLACE FUNCTION usage_periods_add_batch() RETURNS bigint
LANGUAGE plpgsql SET jit = off SET default_statistics_target = 10 SET enable_mergejoin = off AS $$
DECLARE
    opened bigint := 0;
BEGIN
    DROP VIEW IF EXISTS usage_batch_days, usage_batch_day_totals;
    DROP TABLE IF EXISTS usage_batch_subjects, usage_batch_kinds, usage_batch_natural,
                         usage_batch_spans, usage_batch_near, usage_batch_placed,
                         usage_batch_indirect, usage_batch_exact;
    CREATE TEMP TABLE usage_batch_subjects ON COMMIT DROP AS
    SELECT z.user_id, z.org_id, z.zone,
           COALESCE(o.billing_anchor_day, u.billing_anchor_day, 1) AS anchor
      FROM aggregate_zones z
      LEFT JOIN users u ON z.org_id = 0 AND u.id = z.user_id
      LEFT JOIN organizations o ON z.org_id > 0 AND o.id = z.org_id;
    ANALYZE usage_batch_subjects;

    -- The batch per subject, local day and kind, and per subject and local day (`day_total`,
    -- kind NULL), in one pass. The overflow checks of the job have kept every sum of the
    -- batch within bigint.
    CREATE TEMP TABLE usage_batch_kinds ON COMMIT DROP AS
    SELECT s.user_id, s.org_id, s.zone, s.anchor, g.day, g.kind,
           GROUPING(g.kind) = 1 AS day_total, sum(g.events)::bigint AS requests,
           sum(g.messages)::bigint AS messages, sum(g.tokens::bigint)::bigint AS tokens,
           sum(g.bytes::bigint)::bigint AS bytes, sum(g.cost) AS cost,
           min(g.first_at) AS first_at, max(g.last_at) AS last_at
      FROM aggregate_groups g
      JOIN usage_batch_subjects s
        ON s.user_id = CASE WHEN g.org_id IS NULL THEN g.user_id ELSE 0 END
       AND s.org_id = COALESCE(g.org_id, 0)
     GROUP BY GROUPING SETS ((s.user_id, s.org_id, s.zone, s.anchor, g.day, g.kind),
                             (s.user_id, s.org_id, s.zone, s.anchor, g.day));
    ANALYZE usage_batch_kinds;

    -- The natural day and month of each local day, by zone and anchor: the bounds
    -- usage_period_bounds gives for the day's first instant, from the same parts.
    CREATE TEMP TABLE usage_batch_natural ON COMMIT DROP AS
    WITH days AS (
        SELECT DISTINCT zone, anchor, day FROM usage_batch_kinds WHERE day_total
    ), months AS (
        SELECT k.zone, k.anchor, k.day, m.start_date, m.end_date
          FROM days k
         CROSS JOIN LATERAL usage_period_dates(k.day, k.anchor, 'month') m
    ), midnights AS (
        SELECT x.zone, x.day, usage_local_midnight(x.day, x.zone) AS at
          FROM (SELECT zone, day FROM days UNION SELECT zone, day + 1 FROM days
                UNION SELECT zone, start_date FROM months UNION SELECT zone, end_date FROM months) x
    )
    SELECT m.zone, m.anchor, m.day, ds.at AS day_start, de.at AS day_end,
           ms.at AS month_start, me.at AS month_end
      FROM months m
      JOIN midnights ds ON ds.zone = m.zone AND ds.day = m.day
      JOIN midnights de ON de.zone = m.zone AND de.day = m.day + 1
      JOIN midnights ms ON ms.zone = m.zone AND ms.day = m.start_date
      JOIN midnights me ON me.zone = m.zone AND me.day = m.end_date;
    ANALYZE usage_batch_natural;

    -- The same rows with their day's natural periods: views, joined where they are read (the
    -- natural table is small), dropped before the function returns. usage_batch_days has a
    -- row per subject, day and kind; usage_batch_day_totals one per subject and day.
    CREATE TEMP VIEW usage_batch_days AS
    SELECT k.user_id, k.org_id, k.day, k.kind, n.day_start, n.day_end, n.month_start,
           n.month_end, k.requests, k.messages, k.tokens, k.bytes, k.cost, k.first_at, k.last_at
      FROM usage_batch_kinds k
      JOIN usage_batch_natural n ON n.zone = k.zone AND n.anchor = k.anchor AND n.day = k.day
     WHERE NOT k.day_total;
    CREATE TEMP VIEW usage_batch_day_totals AS
    SELECT k.user_id, k.org_id, k.day, n.day_start, n.day_end, n.month_start, n.month_end,
           k.requests, k.messages, k.tokens, k.bytes, k.cost, k.first_at, k.last_at
      FROM usage_batch_kinds k
      JOIN usage_batch_natural n ON n.zone = k.zone AND n.anchor = k.anchor AND n.day = k.day
     WHERE k.day_total;

    -- The existing periods near the batch, per subject and period kind. A period is shorter
    -- than 32 days, so none starting earlier reaches the batch.
    CREATE TEMP TABLE usage_batch_near ON COMMIT DROP AS
    WITH reach AS (
        SELECT user_id, org_id, min(LEAST(day_start, first_at)) - interval '32 days' AS day_low,
               max(GREATEST(day_end, last_at)) AS day_high,
               min(LEAST(month_start, first_at)) - interval '32 days' AS month_low,
               max(GREATEST(month_end, last_at)) AS month_high
          FROM usage_batch_day_totals GROUP BY 1, 2
    )
    SELECT up.user_id, up.org_id, up.period, up.period_start, up.period_end
      FROM reach r
      JOIN usage_periods up ON up.user_id = r.user_id AND up.org_id = r.org_id
       AND up.period = 'day' AND up.period_start >= r.day_low AND up.period_start <= r.day_high
    UNION ALL
    SELECT up.user_id, up.org_id, up.period, up.period_start, up.period_end
      FROM reach r
      JOIN usage_periods up ON up.user_id = r.user_id AND up.org_id = r.org_id
       AND up.period = 'month' AND up.period_start >= r.month_low
       AND up.period_start <= r.month_high;
    ANALYZE usage_batch_near;

    -- A span: a subject's events of one natural period, with their totals, and the way it is
    -- placed: `direct` — no period of the subject near it, its events within the natural
    -- bounds: the natural period, opened (no other span of the subject overlaps it);
    -- `near` — placed among the periods near it (below); `exact` — no period near, but
    -- events outside the natural bounds (a clock change across midnight): per event.
    CREATE TEMP TABLE usage_batch_spans ON COMMIT DROP AS
    WITH sums AS (
        SELECT user_id, org_id, 'day' AS period, day_start AS natural_start,
               day_end AS natural_end, first_at, last_at, requests::numeric AS requests,
               messages::numeric AS messages, tokens::numeric AS tokens,
               bytes::numeric AS bytes, cost
          FROM usage_batch_day_totals
        UNION ALL
        SELECT user_id, org_id, 'month', month_start, month_end, min(first_at), max(last_at),
               sum(requests), sum(messages), sum(tokens), sum(bytes), sum(cost)
          FROM usage_batch_day_totals GROUP BY 1, 2, 3, 4, 5
    )
    SELECT s.*,
           CASE WHEN n.user_id IS NOT NULL THEN 'near'
                WHEN s.first_at >= s.natural_start AND s.last_at < s.natural_end THEN 'direct'
                ELSE 'exact' END AS way
      FROM sums s
      LEFT JOIN (SELECT DISTINCT user_id, org_id, period FROM usage_batch_near) n
        ON n.user_id = s.user_id AND n.org_id = s.org_id AND n.period = s.period;
    ANALYZE usage_batch_spans;

    -- Where the spans that are not `direct` go (usually none, in a first import): the
    -- window over each subject's nearby periods and spans, or the per-event path.
    CREATE TEMP TABLE usage_batch_placed ON COMMIT DROP AS
    WITH merged AS (
        SELECT n.user_id, n.org_id, n.period, n.period_start AS at, 0 AS ord, n.period_start,
               n.period_end, NULL::timestamptz AS natural_start, NULL::timestamptz AS natural_end,
               NULL::timestamptz AS first_at, NULL::timestamptz AS last_at,
               NULL::numeric AS requests, NULL::numeric AS messages, NULL::numeric AS tokens,
               NULL::numeric AS bytes, NULL::numeric AS cost
          FROM usage_batch_near n
        UNION ALL
        SELECT s.user_id, s.org_id, s.period, s.first_at, 1, NULL, NULL, s.natural_start,
               s.natural_end, s.first_at, s.last_at, s.requests, s.messages, s.tokens, s.bytes,
               s.cost
          FROM usage_batch_spans s
         WHERE s.way = 'near'
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
      FROM trimmed t
    UNION ALL
    SELECT s.user_id, s.org_id, s.period, s.natural_start, 'exact', s.natural_start,
           s.natural_end, s.requests, s.messages, s.tokens, s.bytes, s.cost
      FROM usage_batch_spans s
     WHERE s.way = 'exact';
    ANALYZE usage_batch_placed;

    -- New periods are inserted with their totals (one write per row). The ranges of new
    -- periods are disjoint and clear of every existing one: a conflict here would be a
    -- miscount, so it fails the transaction instead of being absorbed.
    INSERT INTO usage_periods (user_id, org_id, period, period_start, period_end, requests,
                               messages, tokens, bytes, cost)
    SELECT user_id, org_id, period, natural_start, natural_end, requests, messages, tokens,
           bytes, cost
      FROM usage_batch_spans
     WHERE way = 'direct'
    UNION ALL
    SELECT user_id, org_id, period, period_start, period_end, requests, messages, tokens, bytes, cost
      FROM usage_batch_placed
     WHERE placement = 'open'
     ORDER BY 1, 2, 3, 4;
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

    -- Per-kind rows of new periods. A direct day period holds exactly its local day, so its
    -- rows are the batch's days as grouped; a direct month sums its days. Every day belongs
    -- to one day span and one month span, so "direct" is "none of the few others".
    CREATE TEMP TABLE usage_batch_indirect ON COMMIT DROP AS
    SELECT user_id, org_id, period, natural_start FROM usage_batch_spans WHERE way <> 'direct';
    ANALYZE usage_batch_indirect;
    INSERT INTO usage_period_kind_totals
           (user_id, org_id, period, period_start, kind, requests, messages, tokens, bytes, cost)
    SELECT d.user_id, d.org_id, 'day', d.day_start, d.kind, d.requests, d.messages, d.tokens,
           d.bytes, d.cost
      FROM usage_batch_days d
     WHERE NOT EXISTS (SELECT 1 FROM usage_batch_indirect i
                        WHERE i.user_id = d.user_id AND i.org_id = d.org_id
                          AND i.period = 'day' AND i.natural_start = d.day_start)
    UNION ALL
    SELECT d.user_id, d.org_id, 'month', d.month_start, d.kind, sum(d.requests),
           sum(d.messages), sum(d.tokens), sum(d.bytes), sum(d.cost)
      FROM usage_batch_days d
     WHERE NOT EXISTS (SELECT 1 FROM usage_batch_indirect i
                        WHERE i.user_id = d.user_id AND i.org_id = d.org_id
                          AND i.period = 'month' AND i.natural_start = d.month_start)
     GROUP BY 1, 2, 3, 4, 5
    UNION ALL
    -- New periods placed among existing ones: a day period holds one local day, or part
    -- of one.
    SELECT d.user_id, d.org_id, 'day', p.period_start, d.kind, d.requests, d.messages, d.tokens,
           d.bytes, d.cost
      FROM usage_batch_days d
      JOIN usage_batch_placed p ON p.user_id = d.user_id AND p.org_id = d.org_id
       AND p.period = 'day' AND p.natural_start = d.day_start AND p.placement = 'open'
    UNION ALL
    SELECT d.user_id, d.org_id, 'month', p.period_start, d.kind, sum(d.requests),
           sum(d.messages), sum(d.tokens), sum(d.bytes), sum(d.cost)
      FROM usage_batch_days d
      JOIN usage_batch_placed p ON p.user_id = d.user_id AND p.org_id = d.org_id
       AND p.period = 'month' AND p.natural_start = d.month_start AND p.placement = 'open'
     GROUP BY 1, 2, 3, 4, 5;
    -- Existing periods: the batch's per-kind sums are added.
    INSERT INTO usage_period_kind_totals AS t
           (user_id, org_id, period, period_start, kind, requests, messages, tokens, bytes, cost)
    SELECT x.user_id, x.org_id, x.period, x.period_start, x.kind, sum(x.requests),
           sum(x.messages), sum(x.tokens), sum(x.bytes), sum(x.cost)
      FROM (SELECT d.user_id, d.org_id, p.period, p.period_start, d.kind, d.requests,
                   d.messages, d.tokens, d.bytes, d.cost
              FROM usage_batch_days d
              JOIN usage_batch_placed p ON p.user_id = d.user_id AND p.org_id = d.org_id
               AND p.period = 'day' AND p.natural_start = d.day_start
               AND p.placement = 'located'
            UNION ALL
            SELECT d.user_id, d.org_id, p.period, p.period_start, d.kind, d.requests,
                   d.messages, d.tokens, d.bytes, d.cost
              FROM usage_batch_days d
              JOIN usage_batch_placed p ON p.user_id = d.user_id AND p.org_id = d.org_id
               AND p.period = 'month' AND p.natural_start = d.month_start
               AND p.placement = 'located') x
     GROUP BY 1, 2, 3, 4, 5
    ON CONFLICT (user_id, org_id, period, period_start, kind) DO UPDATE
       SET requests = t.requests + EXCLUDED.requests,
           messages = t.messages + EXCLUDED.messages,
           tokens   = t.tokens + EXCLUDED.tokens,
           bytes    = t.bytes + EXCLUDED.bytes,
           cost     = t.cost + EXCLUDED.cost;

    IF EXISTS (SELECT 1 FROM usage_batch_placed WHERE placement = 'exact') THEN
        CREATE TEMP TABLE usage_batch_exact ON COMMIT DROP AS
        WITH events AS (
            SELECT z.user_id, z.org_id, n.day_start, n.month_start, b.created_at, b.kind,
                   b.messages, b.tokens, b.bytes, b.cost
              FROM aggregate_batch b
              JOIN usage_batch_subjects z
                ON z.user_id = CASE WHEN b.org_id IS NULL THEN b.user_id ELSE 0 END
               AND z.org_id = COALESCE(b.org_id, 0)
              JOIN usage_batch_natural n ON n.zone = z.zone AND n.anchor = z.anchor
               AND n.day = (b.created_at AT TIME ZONE z.zone)::date
             WHERE (z.user_id, z.org_id) IN (SELECT user_id, org_id FROM usage_batch_placed
                                              WHERE placement = 'exact')
        )
        SELECT e.user_id, e.org_id, p.period, e.created_at, e.kind, e.messages, e.tokens,
               e.bytes, e.cost
          FROM events e
          JOIN usage_batch_placed p ON p.user_id = e.user_id AND p.org_id = e.org_id
           AND p.period = 'day' AND p.natural_start = e.day_start AND p.placement = 'exact'
        UNION ALL
        SELECT e.user_id, e.org_id, p.period, e.created_at, e.kind, e.messages, e.tokens,
               e.bytes, e.cost
          FROM events e
          JOIN usage_batch_placed p ON p.user_id = e.user_id AND p.org_id = e.org_id
           AND p.period = 'month' AND p.natural_start = e.month_start AND p.placement = 'exact';
        opened := opened + usage_periods_add_exact();
    END IF;

    DROP VIEW IF EXISTS usage_batch_days, usage_batch_day_totals;
    DROP TABLE IF EXISTS usage_batch_subjects, usage_batch_kinds, usage_batch_natural,
                         usage_batch_spans, usage_batch_near, usage_batch_placed,
                         usage_batch_indirect, usage_batch_exact;
    RETURN opened;
END;
$$;
