-- Daily summary rows the batch would take past 2^63-1 in some column, with what each row
-- already holds. Usually empty: one probe of the summary's unique key per group.
CREATE TEMP TABLE aggregate_overflow_daily ON COMMIT DROP AS
SELECT g.user_id, g.org_id, g.day, g.kind, g.request_type, g.model,
       COALESCE(d.tokens, 0) AS tokens, COALESCE(d.prompt_tokens, 0) AS prompt_tokens,
       COALESCE(d.completion_tokens, 0) AS completion_tokens,
       COALESCE(d.messages, 0) AS messages, COALESCE(d.bytes, 0) AS bytes
  FROM aggregate_groups g
  LEFT JOIN token_usage_daily d
    ON d.user_id = g.user_id AND d.day = g.day AND d.kind = g.kind
   AND d.request_type = g.request_type AND d.model = g.model
   AND d.org_id IS NOT DISTINCT FROM g.org_id
 WHERE COALESCE(d.tokens, 0) + g.tokens > 9223372036854775807
    OR COALESCE(d.prompt_tokens, 0) + g.prompt_tokens > 9223372036854775807
    OR COALESCE(d.completion_tokens, 0) + g.completion_tokens > 9223372036854775807
    OR COALESCE(d.messages, 0)::numeric + g.messages > 9223372036854775807
    OR COALESCE(d.bytes, 0) + g.bytes > 9223372036854775807
