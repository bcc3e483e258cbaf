-- Period step 13, period_per_event: the events of the spans placed `per_event`
-- (period_placed), one row per event and period kind, for steps 14 to 16; only run when there
-- are such spans (a clock change across midnight, or events between existing periods).
-- Reads aggregate_batch, aggregate_subjects, period_natural, period_placed.
CREATE TEMP TABLE period_per_event ON COMMIT DROP AS
WITH events AS (
    SELECT z.user_id, z.org_id, n.day_start, n.month_start, b.created_at, b.kind,
           b.messages, b.tokens, b.bytes, b.cost
      FROM aggregate_batch b
      JOIN aggregate_subjects z ON z.user_id = b.subject_user_id AND z.org_id = b.subject_org_id
      JOIN period_natural n ON n.zone = z.zone AND n.anchor = z.anchor
       AND n.day = (b.created_at AT TIME ZONE z.zone)::date
     WHERE (z.user_id, z.org_id) IN (SELECT user_id, org_id FROM period_placed
                                      WHERE placement = 'per_event')
)
SELECT e.user_id, e.org_id, p.period, e.created_at, e.kind, e.messages, e.tokens,
       e.bytes, e.cost
  FROM events e
  JOIN period_placed p ON p.user_id = e.user_id AND p.org_id = e.org_id
   AND p.period = 'day' AND p.natural_start = e.day_start AND p.placement = 'per_event'
UNION ALL
SELECT e.user_id, e.org_id, p.period, e.created_at, e.kind, e.messages, e.tokens,
       e.bytes, e.cost
  FROM events e
  JOIN period_placed p ON p.user_id = e.user_id AND p.org_id = e.org_id
   AND p.period = 'month' AND p.natural_start = e.month_start AND p.placement = 'per_event'
