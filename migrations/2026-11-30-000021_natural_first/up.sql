-- The period step of `aggregate` with fewer passes over the batch:
-- 1. The natural bounds of each local day are computed before the batch is summed per
--    subject, day and kind, and carried on those sums, so that no later statement joins
--    them again. The bound functions run once per (anchor, day) and per (zone, date).
-- 2. Spans placed directly in their natural period (every span of a first import) are
--    inserted as they are classified; only the others are kept in `usage_batch_spans`.
-- 3. New periods are inserted in the order the sums come in (already the primary key's),
--    not sorted again.
-- 4. The index of open periods (resets and alerts read it) is keyed by their end alone, a
--    narrower key that new periods are cheaper to insert into; the period kind a reset
--    wants is read from the row.
-- The inputs and the result are those of 2026-11-29-000020_lean_periods.

DROP INDEX usage_periods_open_end_idx;
CREATE INDEX usage_periods_open_end_idx ON usage_periods (period_end) WHERE status = 'open';

CREATE OR REPLACE FUNCTION usage_periods_add_batch() RETURNS bigint
LANGUAGE plpgsql SET jit = off SET default_statistics_target = 10 SET enable_mergejoin = off AS $$
DECLARE
    opened bigint := 0;
    added bigint;
    pairs bigint;
    days bigint;
    group_rows bigint;
BEGIN
    DROP TABLE IF EXISTS usage_batch_subjects, usage_batch_day_list, usage_batch_zone_days,
                         usage_batch_natural, usage_batch_kinds, usage_batch_spans,
                         usage_batch_near, usage_batch_placed, usage_batch_exact;
    CREATE TEMP TABLE usage_batch_subjects ON COMMIT DROP AS
    SELECT z.user_id, z.org_id, z.zone,
           COALESCE(o.billing_anchor_day, u.billing_anchor_day, 1) AS anchor
      FROM aggregate_zones z
      LEFT JOIN users u ON z.org_id = 0 AND u.id = z.user_id
      LEFT JOIN organizations o ON z.org_id > 0 AND o.id = z.org_id;
    ANALYZE usage_batch_subjects;

    -- The natural day and month of each local day of the batch, per zone and anchor: the
    -- bounds usage_period_bounds gives for the day's first instant, from the same parts.
    -- The (zone, anchor, day) it needs: every (zone, anchor) of a subject times every local
    -- day of the batch, unless that makes more rows than the groups (a row for a day a
    -- subject has no events on costs less than a pass over the groups); then those the
    -- groups hold.
    CREATE TEMP TABLE usage_batch_day_list ON COMMIT DROP AS
    SELECT day, count(*) AS n FROM aggregate_groups GROUP BY day;
    SELECT count(*), COALESCE(sum(n), 0) INTO days, group_rows FROM usage_batch_day_list;
    SELECT count(*) INTO pairs FROM (SELECT DISTINCT zone, anchor FROM usage_batch_subjects) p;
    CREATE TEMP TABLE usage_batch_zone_days ON COMMIT DROP AS
    SELECT p.zone, p.anchor, d.day
      FROM (SELECT DISTINCT zone, anchor FROM usage_batch_subjects) p
     CROSS JOIN usage_batch_day_list d
     WHERE pairs * days <= group_rows
    UNION ALL
    SELECT DISTINCT s.zone, s.anchor, g.day
      FROM aggregate_groups g
      JOIN usage_batch_subjects s
        ON s.user_id = CASE WHEN g.org_id IS NULL THEN g.user_id ELSE 0 END
       AND s.org_id = COALESCE(g.org_id, 0)
     WHERE pairs * days > group_rows;
    ANALYZE usage_batch_zone_days;
    -- The functions run once per (anchor, day) and per (zone, date), not per row.
    CREATE TEMP TABLE usage_batch_natural ON COMMIT DROP AS
    WITH months AS (
        SELECT a.anchor, a.day, m.start_date, m.end_date
          FROM (SELECT DISTINCT anchor, day FROM usage_batch_zone_days) a
         CROSS JOIN LATERAL usage_period_dates(a.day, a.anchor, 'month') m
    ), bounds AS (
        SELECT z.zone, z.anchor, z.day, m.start_date, m.end_date
          FROM usage_batch_zone_days z
          JOIN months m ON m.anchor = z.anchor AND m.day = z.day
    ), midnights AS (
        SELECT x.zone, x.day, usage_local_midnight(x.day, x.zone) AS at
          FROM (SELECT zone, day FROM bounds UNION SELECT zone, day + 1 FROM bounds
                UNION SELECT zone, start_date FROM bounds
                UNION SELECT zone, end_date FROM bounds) x
    )
    SELECT b.zone, b.anchor, b.day, ds.at AS day_start, de.at AS day_end,
           ms.at AS month_start, me.at AS month_end
      FROM bounds b
      JOIN midnights ds ON ds.zone = b.zone AND ds.day = b.day
      JOIN midnights de ON de.zone = b.zone AND de.day = b.day + 1
      JOIN midnights ms ON ms.zone = b.zone AND ms.day = b.start_date
      JOIN midnights me ON me.zone = b.zone AND me.day = b.end_date;
    ANALYZE usage_batch_natural;

    -- The batch per subject, local day (by its natural bounds) and kind, and per subject and
    -- local day (`day_total`, kind NULL), in one pass. The overflow checks of the job have
    -- kept every sum of the batch within bigint.
    CREATE TEMP TABLE usage_batch_kinds ON COMMIT DROP AS
    SELECT s.user_id, s.org_id, n.day_start, n.day_end, n.month_start, n.month_end, g.kind,
           GROUPING(g.kind) = 1 AS day_total, sum(g.events)::bigint AS requests,
           sum(g.messages)::bigint AS messages, sum(g.tokens::bigint)::bigint AS tokens,
           sum(g.bytes::bigint)::bigint AS bytes, sum(g.cost) AS cost,
           min(g.first_at) AS first_at, max(g.last_at) AS last_at
      FROM aggregate_groups g
      JOIN usage_batch_subjects s
        ON s.user_id = CASE WHEN g.org_id IS NULL THEN g.user_id ELSE 0 END
       AND s.org_id = COALESCE(g.org_id, 0)
      JOIN usage_batch_natural n ON n.zone = s.zone AND n.anchor = s.anchor AND n.day = g.day
     GROUP BY GROUPING SETS ((s.user_id, s.org_id, n.day_start, n.day_end, n.month_start,
                              n.month_end, g.kind),
                             (s.user_id, s.org_id, n.day_start, n.day_end, n.month_start,
                              n.month_end));
    ANALYZE usage_batch_kinds;

    -- The existing periods near the batch, per subject and period kind. A period is shorter
    -- than 32 days, so none starting earlier reaches the batch.
    CREATE TEMP TABLE usage_batch_near ON COMMIT DROP AS
    WITH reach AS (
        SELECT user_id, org_id, min(LEAST(day_start, first_at)) - interval '32 days' AS day_low,
               max(GREATEST(day_end, last_at)) AS day_high,
               min(LEAST(month_start, first_at)) - interval '32 days' AS month_low,
               max(GREATEST(month_end, last_at)) AS month_high
          FROM usage_batch_kinds WHERE day_total GROUP BY 1, 2
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
    -- bounds: the natural period, opened (no other span of the subject overlaps it), here;
    -- `near` — placed among the periods near it (below); `exact` — no period near, but
    -- events outside the natural bounds (a clock change across midnight): per event.
    -- usage_batch_spans keeps the spans that are not direct (usually none, in a first
    -- import).
    CREATE TEMP TABLE usage_batch_spans (
        user_id bigint, org_id bigint, period text, natural_start timestamptz,
        natural_end timestamptz, first_at timestamptz, last_at timestamptz, requests numeric,
        messages numeric, tokens numeric, bytes numeric, cost numeric, way text
    ) ON COMMIT DROP;
    WITH sums AS (
        SELECT user_id, org_id, 'day' AS period, day_start AS natural_start,
               day_end AS natural_end, first_at, last_at, requests::numeric AS requests,
               messages::numeric AS messages, tokens::numeric AS tokens,
               bytes::numeric AS bytes, cost
          FROM usage_batch_kinds WHERE day_total
        UNION ALL
        SELECT user_id, org_id, 'month', month_start, month_end, min(first_at), max(last_at),
               sum(requests), sum(messages), sum(tokens), sum(bytes), sum(cost)
          FROM usage_batch_kinds WHERE day_total GROUP BY 1, 2, 3, 4, 5
    ), spans AS (
        SELECT s.*,
               CASE WHEN n.user_id IS NOT NULL THEN 'near'
                    WHEN s.first_at >= s.natural_start AND s.last_at < s.natural_end THEN 'direct'
                    ELSE 'exact' END AS way
          FROM sums s
          LEFT JOIN (SELECT DISTINCT user_id, org_id, period FROM usage_batch_near) n
            ON n.user_id = s.user_id AND n.org_id = s.org_id AND n.period = s.period
    ), kept AS (
        INSERT INTO usage_batch_spans SELECT * FROM spans WHERE way <> 'direct'
    )
    -- New periods are inserted with their totals (one write per row). The ranges of new
    -- periods are disjoint and clear of every existing one: a conflict here would be a
    -- miscount, so it fails the transaction instead of being absorbed.
    INSERT INTO usage_periods (user_id, org_id, period, period_start, period_end, requests,
                               messages, tokens, bytes, cost)
    SELECT user_id, org_id, period, natural_start, natural_end, requests, messages, tokens,
           bytes, cost
      FROM spans
     WHERE way = 'direct';
    GET DIAGNOSTICS opened = ROW_COUNT;
    ANALYZE usage_batch_spans;

    -- Where the spans that are not `direct` go: the window over each subject's nearby
    -- periods and spans, or the per-event path.
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

    INSERT INTO usage_periods (user_id, org_id, period, period_start, period_end, requests,
                               messages, tokens, bytes, cost)
    SELECT user_id, org_id, period, period_start, period_end, requests, messages, tokens, bytes, cost
      FROM usage_batch_placed
     WHERE placement = 'open';
    GET DIAGNOSTICS added = ROW_COUNT;
    opened := opened + added;
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
    -- to one day span and one month span, so "direct" is "none of the few kept".
    INSERT INTO usage_period_kind_totals
           (user_id, org_id, period, period_start, kind, requests, messages, tokens, bytes, cost)
    SELECT k.user_id, k.org_id, 'day', k.day_start, k.kind, k.requests, k.messages, k.tokens,
           k.bytes, k.cost
      FROM usage_batch_kinds k
     WHERE NOT k.day_total
       AND NOT EXISTS (SELECT 1 FROM usage_batch_spans i
                        WHERE i.user_id = k.user_id AND i.org_id = k.org_id
                          AND i.period = 'day' AND i.natural_start = k.day_start)
    UNION ALL
    SELECT k.user_id, k.org_id, 'month', k.month_start, k.kind, sum(k.requests),
           sum(k.messages), sum(k.tokens), sum(k.bytes), sum(k.cost)
      FROM usage_batch_kinds k
     WHERE NOT k.day_total
       AND NOT EXISTS (SELECT 1 FROM usage_batch_spans i
                        WHERE i.user_id = k.user_id AND i.org_id = k.org_id
                          AND i.period = 'month' AND i.natural_start = k.month_start)
     GROUP BY 1, 2, 3, 4, 5
    UNION ALL
    -- New periods placed among existing ones: a day period holds one local day, or part
    -- of one.
    SELECT k.user_id, k.org_id, 'day', p.period_start, k.kind, k.requests, k.messages, k.tokens,
           k.bytes, k.cost
      FROM usage_batch_kinds k
      JOIN usage_batch_placed p ON p.user_id = k.user_id AND p.org_id = k.org_id
       AND p.period = 'day' AND p.natural_start = k.day_start AND p.placement = 'open'
     WHERE NOT k.day_total
    UNION ALL
    SELECT k.user_id, k.org_id, 'month', p.period_start, k.kind, sum(k.requests),
           sum(k.messages), sum(k.tokens), sum(k.bytes), sum(k.cost)
      FROM usage_batch_kinds k
      JOIN usage_batch_placed p ON p.user_id = k.user_id AND p.org_id = k.org_id
       AND p.period = 'month' AND p.natural_start = k.month_start AND p.placement = 'open'
     WHERE NOT k.day_total
     GROUP BY 1, 2, 3, 4, 5;
    -- Existing periods: the batch's per-kind sums are added.
    INSERT INTO usage_period_kind_totals AS t
           (user_id, org_id, period, period_start, kind, requests, messages, tokens, bytes, cost)
    SELECT x.user_id, x.org_id, x.period, x.period_start, x.kind, sum(x.requests),
           sum(x.messages), sum(x.tokens), sum(x.bytes), sum(x.cost)
      FROM (SELECT k.user_id, k.org_id, p.period, p.period_start, k.kind, k.requests,
                   k.messages, k.tokens, k.bytes, k.cost
              FROM usage_batch_kinds k
              JOIN usage_batch_placed p ON p.user_id = k.user_id AND p.org_id = k.org_id
               AND p.period = 'day' AND p.natural_start = k.day_start
               AND p.placement = 'located'
             WHERE NOT k.day_total
            UNION ALL
            SELECT k.user_id, k.org_id, p.period, p.period_start, k.kind, k.requests,
                   k.messages, k.tokens, k.bytes, k.cost
              FROM usage_batch_kinds k
              JOIN usage_batch_placed p ON p.user_id = k.user_id AND p.org_id = k.org_id
               AND p.period = 'month' AND p.natural_start = k.month_start
               AND p.placement = 'located'
             WHERE NOT k.day_total) x
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

    DROP TABLE IF EXISTS usage_batch_subjects, usage_batch_day_list, usage_batch_zone_days,
                         usage_batch_natural, usage_batch_kinds, usage_batch_spans,
                         usage_batch_near, usage_batch_placed, usage_batch_exact;
    RETURN opened;
END;
$$;
