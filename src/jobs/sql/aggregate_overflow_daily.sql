-- Daily summary rows the batch would take past 2^63-1 in some column, with what each row
-- already holds: rows there (aggregate_daily_existing), or groups that alone pass it.
-- Usually empty.
CREATE TEMP TABLE aggregate_overflow_daily ON COMMIT DROP AS
SELECT x.user_id, x.org_id, x.day, x.kind, x.request_type, x.model, x.tokens,
       x.prompt_tokens, x.completion_tokens, x.messages, x.bytes
  FROM aggregate_daily_existing x
 WHERE x.tokens + x.add_tokens > 9223372036854775807
    OR x.prompt_tokens + x.add_prompt_tokens > 9223372036854775807
    OR x.completion_tokens + x.add_completion_tokens > 9223372036854775807
    OR x.messages::numeric + x.add_messages > 9223372036854775807
    OR x.bytes + x.add_bytes > 9223372036854775807
UNION ALL
SELECT g.user_id, g.org_id, g.day, g.kind, g.request_type, g.model, 0, 0, 0, 0, 0
  FROM aggregate_groups g
 WHERE (g.tokens > 9223372036854775807 OR g.prompt_tokens > 9223372036854775807
        OR g.completion_tokens > 9223372036854775807 OR g.messages > 9223372036854775807
        OR g.bytes > 9223372036854775807)
   AND NOT EXISTS (SELECT 1 FROM aggregate_daily_existing x
                    WHERE x.user_id = g.user_id AND x.day = g.day AND x.kind = g.kind
                      AND x.request_type = g.request_type AND x.model = g.model
                      AND x.org_id IS NOT DISTINCT FROM g.org_id)
