-- Period step 4, period_sums: the batch per subject, local day (with its natural day and
-- month bounds) and event kind, and per subject and local day over all kinds (`day_total`,
-- kind NULL), in one pass (grouping sets). The overflow checks of the job have kept every
-- sum of the batch within bigint. Reads aggregate_groups, aggregate_subjects,
-- period_natural.
CREATE TEMP TABLE period_sums ON COMMIT DROP AS
SELECT s.user_id, s.org_id, n.day_start, n.day_end, n.month_start, n.month_end, g.kind,
       GROUPING(g.kind) = 1 AS day_total, sum(g.events)::bigint AS requests,
       sum(g.messages)::bigint AS messages, sum(g.tokens::bigint)::bigint AS tokens,
       sum(g.bytes::bigint)::bigint AS bytes, sum(g.cost) AS cost,
       min(g.first_at) AS first_at, max(g.last_at) AS last_at
  FROM aggregate_groups g
  JOIN aggregate_subjects s ON s.user_id = g.subject_user_id AND s.org_id = g.subject_org_id
  JOIN period_natural n ON n.zone = s.zone AND n.anchor = s.anchor AND n.day = g.day
 GROUP BY GROUPING SETS ((s.user_id, s.org_id, n.day_start, n.day_end, n.month_start,
                          n.month_end, g.kind),
                         (s.user_id, s.org_id, n.day_start, n.day_end, n.month_start,
                          n.month_end))
