-- Reconciliation, step 2: the true totals of every period in `usage_closing`, per event
-- kind, from the raw events in [period_start, period_end). Only events below the aggregation
-- watermark count: the rest are still to be added by `aggregate` (which cannot run while this
-- transaction holds the watermark row) into whichever period contains them, open or closed.
-- Events `aggregate` set aside (usage_quarantine) are left out here too: that is what keeps
-- these sums equal to what was counted, and within bigint.
CREATE TEMP TABLE usage_closing_raw ON COMMIT DROP AS
SELECT c.user_id, c.period, c.period_start, e.kind,
       count(*)::bigint        AS requests,
       sum(e.messages)::bigint AS messages,
       sum(e.tokens)::bigint   AS tokens,
       sum(e.bytes)::bigint    AS bytes,
       sum(e.cost)             AS cost
  FROM usage_closing c
  JOIN usage_events e
    ON e.user_id = c.user_id
   AND e.created_at >= c.period_start
   AND e.created_at < c.period_end
 WHERE e.recorded_xid < (SELECT xid FROM aggregation_watermark)
   AND NOT EXISTS (SELECT 1 FROM usage_quarantine q
                    WHERE q.event_id = e.id AND q.created_at = e.created_at)
 GROUP BY c.user_id, c.period, c.period_start, e.kind
