-- aggregate_set_aside: the events of the batch that can never be counted
-- (usage_event_problem: created_at outside the bounds, NaN cost; rows from before those
-- bounds); aggregate_set_aside_leave.sql takes them out of the batch. Later checks add the
-- events that would overflow a sum, and aggregate_quarantine.sql copies them all into
-- usage_quarantine as the transaction advances the watermark.
CREATE TEMP TABLE aggregate_set_aside ON COMMIT DROP AS
SELECT b.id AS event_id, b.created_at, b.user_id, b.org_id, b.recorded_xid,
       usage_event_problem(b.created_at, b.cost) AS reason,
       format('kind=%s created_at=%s tokens=%s prompt_tokens=%s completion_tokens=%s messages=%s bytes=%s cost=%s',
              b.kind, b.created_at, b.tokens, b.prompt_tokens, b.completion_tokens, b.messages,
              b.bytes, b.cost) AS detail
  FROM aggregate_batch b
 WHERE usage_event_problem(b.created_at, b.cost) IS NOT NULL
