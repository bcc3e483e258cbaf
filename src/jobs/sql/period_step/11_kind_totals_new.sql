-- Period step 11: the per-kind rows (usage_period_kind_totals) of the periods steps 7 and 9
-- opened, from period_sums. A direct day period holds exactly its local day, so its rows are
-- the batch's days as grouped; a direct month sums its days. Every day belongs to one day
-- span and one month span, so "direct" is "none of period_spans". A period opened among
-- existing ones (period_placed, `open`) holds one local day, or part of one.
INSERT INTO usage_period_kind_totals
       (user_id, org_id, period, period_start, kind, requests, messages, tokens, bytes, cost)
SELECT k.user_id, k.org_id, 'day', k.day_start, k.kind, k.requests, k.messages, k.tokens,
       k.bytes, k.cost
  FROM period_sums k
 WHERE NOT k.day_total
   AND NOT EXISTS (SELECT 1 FROM period_spans i
                    WHERE i.user_id = k.user_id AND i.org_id = k.org_id
                      AND i.period = 'day' AND i.natural_start = k.day_start)
UNION ALL
SELECT k.user_id, k.org_id, 'month', k.month_start, k.kind, sum(k.requests),
       sum(k.messages), sum(k.tokens), sum(k.bytes), sum(k.cost)
  FROM period_sums k
 WHERE NOT k.day_total
   AND NOT EXISTS (SELECT 1 FROM period_spans i
                    WHERE i.user_id = k.user_id AND i.org_id = k.org_id
                      AND i.period = 'month' AND i.natural_start = k.month_start)
 GROUP BY 1, 2, 3, 4, 5
UNION ALL
SELECT k.user_id, k.org_id, 'day', p.period_start, k.kind, k.requests, k.messages, k.tokens,
       k.bytes, k.cost
  FROM period_sums k
  JOIN period_placed p ON p.user_id = k.user_id AND p.org_id = k.org_id
   AND p.period = 'day' AND p.natural_start = k.day_start AND p.placement = 'open'
 WHERE NOT k.day_total
UNION ALL
SELECT k.user_id, k.org_id, 'month', p.period_start, k.kind, sum(k.requests),
       sum(k.messages), sum(k.tokens), sum(k.bytes), sum(k.cost)
  FROM period_sums k
  JOIN period_placed p ON p.user_id = k.user_id AND p.org_id = k.org_id
   AND p.period = 'month' AND p.natural_start = k.month_start AND p.placement = 'open'
 WHERE NOT k.day_total
 GROUP BY 1, 2, 3, 4, 5
