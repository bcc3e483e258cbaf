-- In each overflowing daily row, the batch's events are added smallest first; those from the
-- one that would pass 2^63-1 on are set aside. Amounts are never negative, so the running
-- sums only grow: the small events of the group are still counted.
INSERT INTO aggregate_set_aside (event_id, created_at, user_id, org_id, recorded_xid, reason, detail)
SELECT r.id, r.created_at, r.user_id, r.org_id, r.recorded_xid, 'daily_sum_overflow',
       format('org_id=%s day=%s kind=%s request_type=%s model=%s tokens=%s prompt_tokens=%s completion_tokens=%s messages=%s bytes=%s',
              COALESCE(r.org_id::text, 'personal'), r.day, r.kind, r.request_type, r.model,
              r.tokens, r.prompt_tokens, r.completion_tokens, r.messages, r.bytes)
  FROM (SELECT b.id, b.created_at, b.user_id, b.org_id, b.recorded_xid, o.day, b.kind,
               b.request_type, b.model, b.tokens, b.prompt_tokens, b.completion_tokens,
               b.messages, b.bytes,
               o.tokens + sum(b.tokens) OVER w AS tokens_after,
               o.prompt_tokens + sum(b.prompt_tokens) OVER w AS prompt_tokens_after,
               o.completion_tokens + sum(b.completion_tokens) OVER w AS completion_tokens_after,
               o.messages + sum(b.messages::numeric) OVER w AS messages_after,
               o.bytes + sum(b.bytes) OVER w AS bytes_after
          FROM aggregate_overflow_daily o
          JOIN aggregate_batch b
            ON b.user_id = o.user_id AND b.org_id IS NOT DISTINCT FROM o.org_id
           AND b.kind = o.kind AND b.request_type = o.request_type AND b.model = o.model
          JOIN aggregate_subjects z
            ON z.user_id = b.subject_user_id AND z.org_id = b.subject_org_id
         WHERE (b.created_at AT TIME ZONE z.zone)::date = o.day
        WINDOW w AS (PARTITION BY o.user_id, o.org_id, o.day, o.kind, o.request_type, o.model
                     ORDER BY b.tokens::numeric + b.prompt_tokens + b.completion_tokens
                              + b.messages + b.bytes, b.id
                     ROWS UNBOUNDED PRECEDING)) r
 WHERE r.tokens_after > 9223372036854775807
    OR r.prompt_tokens_after > 9223372036854775807
    OR r.completion_tokens_after > 9223372036854775807
    OR r.messages_after > 9223372036854775807
    OR r.bytes_after > 9223372036854775807
