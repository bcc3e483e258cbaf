-- Period step 7: every span of the batch (a subject's events of one natural period, from
-- period_sums) and the way it is placed:
-- - `direct`: no period of the subject near it (period_near), its events within the natural
--   bounds: the natural period is opened here, with its totals (no other span of the
--   subject overlaps it). This is every span of a first import.
-- - `near`: placed among the periods near it (step 8).
-- - `per_event`: no period near, but events outside the natural bounds (a clock change
--   across midnight): placed event by event (steps 12 to 15).
-- The spans that are not direct go into period_spans (usually none). Returns the periods
-- opened. The ranges of new periods are disjoint and clear of every existing one: a
-- conflict here would be a miscount, so it fails the transaction instead of being absorbed.
WITH sums AS (
    SELECT user_id, org_id, 'day' AS period, day_start AS natural_start,
           day_end AS natural_end, first_at, last_at, requests::numeric AS requests,
           messages::numeric AS messages, tokens::numeric AS tokens,
           bytes::numeric AS bytes, cost
      FROM period_sums WHERE day_total
    UNION ALL
    SELECT user_id, org_id, 'month', month_start, month_end, min(first_at), max(last_at),
           sum(requests), sum(messages), sum(tokens), sum(bytes), sum(cost)
      FROM period_sums WHERE day_total GROUP BY 1, 2, 3, 4, 5
), spans AS (
    SELECT s.*,
           CASE WHEN n.user_id IS NOT NULL THEN 'near'
                WHEN s.first_at >= s.natural_start AND s.last_at < s.natural_end THEN 'direct'
                ELSE 'per_event' END AS way
      FROM sums s
      LEFT JOIN (SELECT DISTINCT user_id, org_id, period FROM period_near) n
        ON n.user_id = s.user_id AND n.org_id = s.org_id AND n.period = s.period
), kept AS (
    INSERT INTO period_spans SELECT * FROM spans WHERE way <> 'direct'
)
INSERT INTO usage_periods (user_id, org_id, period, period_start, period_end, requests,
                           messages, tokens, bytes, cost)
SELECT user_id, org_id, period, natural_start, natural_end, requests, messages, tokens,
       bytes, cost
  FROM spans
 WHERE way = 'direct'
