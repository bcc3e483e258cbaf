-- aggregate_batch: the new events of one aggregate transaction, W <= recorded_xid < U
-- ($1 = W, $2 = U), one row per event, with the subject each counts for
-- (usage_event_subject: (user_id, 0) when personal, (0, org_id) in an organization). An
-- interface: everything the transaction adds into reads it. Shape:
--
--   aggregate_batch (user_id bigint, org_id bigint, kind text, request_type text, model text,
--                    created_at timestamptz, tokens bigint, prompt_tokens bigint,
--                    completion_tokens bigint, messages integer, bytes bigint, cost numeric,
--                    id bigint, recorded_xid xid8, subject_user_id bigint,
--                    subject_org_id bigint)
--
-- org_id is the organization the usage was spent in, NULL for personal usage. Events that
-- cannot be counted are deleted from it (and set aside) before anything reads it. Dropped at
-- commit, so a crash or a killed connection leaves nothing behind.
CREATE TEMP TABLE aggregate_batch ON COMMIT DROP AS
SELECT e.user_id, e.org_id, e.kind, e.request_type, e.model, e.created_at, e.tokens,
       e.prompt_tokens, e.completion_tokens, e.messages, e.bytes, e.cost, e.id, e.recorded_xid,
       s.user_id AS subject_user_id, s.org_id AS subject_org_id
  FROM usage_events e
 CROSS JOIN LATERAL usage_event_subject(e.user_id, e.org_id) s
 WHERE e.recorded_xid >= $1::xid8
   AND e.recorded_xid < $2::xid8
