-- Period step 8, period_placed: where each span of period_spans goes, by one window over the
-- subject's nearby periods (period_near) and its `near` spans in time order:
-- - `located`: inside the existing period that starts last before it (added there, step 10);
-- - `open`: in a new period from its natural bounds trimmed to the neighbours' (the previous
--   period's end, the next one's start), when its events fit in that (step 9);
-- - `per_event`: anything else, and the `per_event` spans of step 7 (steps 12 to 15).
-- period_start and period_end are the located period's, or the new period's.
CREATE TEMP TABLE period_placed ON COMMIT DROP AS
WITH merged AS (
    SELECT n.user_id, n.org_id, n.period, n.period_start AS at, 0 AS ord, n.period_start,
           n.period_end, NULL::timestamptz AS natural_start, NULL::timestamptz AS natural_end,
           NULL::timestamptz AS first_at, NULL::timestamptz AS last_at,
           NULL::numeric AS requests, NULL::numeric AS messages, NULL::numeric AS tokens,
           NULL::numeric AS bytes, NULL::numeric AS cost
      FROM period_near n
    UNION ALL
    SELECT s.user_id, s.org_id, s.period, s.first_at, 1, NULL, NULL, s.natural_start,
           s.natural_end, s.first_at, s.last_at, s.requests, s.messages, s.tokens, s.bytes,
           s.cost
      FROM period_spans s
     WHERE s.way = 'near'
), framed AS (
    -- Periods never overlap, so the greatest start and end before a span are those of the
    -- period that starts last before it.
    SELECT m.*, max(m.period_start) OVER before AS prev_start,
           max(m.period_end) OVER before AS prev_end,
           min(m.period_start) OVER after AS next_start
      FROM merged m
    WINDOW before AS (PARTITION BY m.user_id, m.org_id, m.period ORDER BY m.at, m.ord
                      ROWS UNBOUNDED PRECEDING),
           -- Growing frames only, in both directions: a frame that shrinks from the front
           -- makes min() rescan the rest of the partition for every row.
           after AS (PARTITION BY m.user_id, m.org_id, m.period ORDER BY m.at DESC, m.ord DESC
                     ROWS UNBOUNDED PRECEDING)
), trimmed AS (
    SELECT f.*, b.period_start AS open_start, b.period_end AS open_end
      FROM framed f
     CROSS JOIN LATERAL usage_period_between(f.natural_start, f.natural_end, f.prev_end,
                                             f.next_start) b
     WHERE f.ord = 1
)
SELECT t.user_id, t.org_id, t.period, t.natural_start,
       CASE WHEN t.prev_end > t.last_at THEN 'located'
            WHEN t.prev_end > t.first_at THEN 'per_event'
            WHEN t.first_at >= t.open_start AND t.last_at < t.open_end THEN 'open'
            ELSE 'per_event' END AS placement,
       CASE WHEN t.prev_end > t.first_at THEN t.prev_start ELSE t.open_start END AS period_start,
       CASE WHEN t.prev_end > t.first_at THEN t.prev_end ELSE t.open_end END AS period_end,
       t.requests, t.messages, t.tokens, t.bytes, t.cost
  FROM trimmed t
UNION ALL
SELECT s.user_id, s.org_id, s.period, s.natural_start, 'per_event', s.natural_start,
       s.natural_end, s.requests, s.messages, s.tokens, s.bytes, s.cost
  FROM period_spans s
 WHERE s.way = 'per_event'
