-- For each subject of aggregate_overflow_period, the batch's events are added smallest
-- first; those from the one that would exceed the room on are set aside.
INSERT INTO aggregate_set_aside (event_id, created_at, user_id, org_id, recorded_xid, reason, detail)
SELECT r.id, r.created_at, r.user_id, r.org_id, r.recorded_xid, 'period_sum_overflow',
       format('org_id=%s kind=%s created_at=%s tokens=%s messages=%s bytes=%s',
              COALESCE(r.org_id::text, 'personal'), r.kind, r.created_at, r.tokens, r.messages,
              r.bytes)
  FROM (SELECT b.id, b.created_at, b.user_id, b.org_id, b.recorded_xid, b.kind, b.tokens,
               b.messages, b.bytes, o.tokens_room, o.messages_room, o.bytes_room,
               sum(b.tokens) OVER w AS tokens_run,
               sum(b.messages::numeric) OVER w AS messages_run,
               sum(b.bytes) OVER w AS bytes_run
          FROM aggregate_overflow_period o
          JOIN aggregate_batch b ON b.subject_user_id = o.user_id AND b.subject_org_id = o.org_id
        WINDOW w AS (PARTITION BY o.user_id, o.org_id
                     ORDER BY b.tokens::numeric + b.messages + b.bytes, b.id
                     ROWS UNBOUNDED PRECEDING)) r
 WHERE r.tokens_run > r.tokens_room
    OR r.messages_run > r.messages_room
    OR r.bytes_run > r.bytes_room
