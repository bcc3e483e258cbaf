-- Reconciliation, step 2: the true totals of every period in `usage_closing`, per event
-- kind, from the raw events in [period_start, period_end): a personal period (org_id 0)
-- counts the user's events without an organization, an organization's period the events
-- spent in it by any member. Only events below the aggregation watermark count: the rest are
-- still to be added by `aggregate` (which cannot run while this transaction holds the
-- watermark row) into whichever period contains them, open or closed. Events `aggregate`
-- set aside (usage_quarantine) are left out here too: that is what keeps these sums equal to
-- what was counted, and within bigint. Run by key (see `by_key` in periods.rs): each period
-- of the batch reads its own events through the subject's index.
CREATE TEMP TABLE usage_closing_raw ON COMMIT DROP AS
WITH events AS (
    -- Two joins rather than one with OR: each uses its own index on usage_events.
    SELECT c.user_id, c.org_id, c.period, c.period_start, e.id, e.created_at, e.recorded_xid,
           e.kind, e.messages, e.tokens, e.bytes, e.cost
      FROM usage_closing c
      JOIN usage_events e
        ON c.org_id = 0
       AND e.user_id = c.user_id
       AND e.org_id IS NULL
       AND e.created_at >= c.period_start
       AND e.created_at < c.period_end
    UNION ALL
    SELECT c.user_id, c.org_id, c.period, c.period_start, e.id, e.created_at, e.recorded_xid,
           e.kind, e.messages, e.tokens, e.bytes, e.cost
      FROM usage_closing c
      JOIN usage_events e
        ON c.org_id > 0
       AND e.org_id = c.org_id
       AND e.created_at >= c.period_start
       AND e.created_at < c.period_end
)
SELECT e.user_id, e.org_id, e.period, e.period_start, e.kind,
       count(*)::bigint        AS requests,
       sum(e.messages)::bigint AS messages,
       sum(e.tokens)::bigint   AS tokens,
       sum(e.bytes)::bigint    AS bytes,
       sum(e.cost)             AS cost
  FROM events e
 WHERE e.recorded_xid < (SELECT xid FROM aggregation_watermark)
   AND NOT EXISTS (SELECT 1 FROM usage_quarantine q
                    WHERE q.event_id = e.id AND q.created_at = e.created_at)
 GROUP BY e.user_id, e.org_id, e.period, e.period_start, e.kind
