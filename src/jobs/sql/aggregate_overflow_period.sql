-- Subjects (a user's personal usage: user_id, org_id 0; an organization's: 0, org_id) whose
-- quota periods the batch could take past 2^63-1. Conservative and cheap: all of a subject's
-- batch against its fullest period (day or month, any kind) that overlaps the batch's events
-- of that subject; a period is at most 32 days long, which bounds the index range read.
-- `*_room` is what may still be added.
CREATE TEMP TABLE aggregate_overflow_period ON COMMIT DROP AS
WITH batch_subjects AS (
    SELECT subject_user_id AS user_id, subject_org_id AS org_id, min(first_at) AS first_at, max(last_at) AS last_at,
           sum(tokens) AS tokens, sum(messages) AS messages, sum(bytes) AS bytes
      FROM aggregate_groups
     GROUP BY 1, 2
), fullest AS (
    SELECT s.user_id, s.org_id, s.tokens, s.messages, s.bytes,
           COALESCE(max(up.tokens), 0) AS period_tokens,
           COALESCE(max(up.messages), 0) AS period_messages,
           COALESCE(max(up.bytes), 0) AS period_bytes
      FROM batch_subjects s
      LEFT JOIN usage_periods up
        ON up.user_id = s.user_id AND up.org_id = s.org_id AND up.period IN ('day', 'month')
       AND up.period_start > s.first_at - interval '32 days'
       AND up.period_start <= s.last_at AND up.period_end > s.first_at
     GROUP BY s.user_id, s.org_id, s.tokens, s.messages, s.bytes
)
SELECT user_id, org_id,
       9223372036854775807 - period_tokens AS tokens_room,
       9223372036854775807 - period_messages AS messages_room,
       9223372036854775807 - period_bytes AS bytes_room
  FROM fullest
 WHERE period_tokens + tokens > 9223372036854775807
    OR period_messages + messages > 9223372036854775807
    OR period_bytes + bytes > 9223372036854775807
