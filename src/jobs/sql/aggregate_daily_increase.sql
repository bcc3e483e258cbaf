-- The summary rows aggregate_daily_existing lists, increased by their groups, each found by
-- its key. Returns the number of rows increased: fewer than listed means a row was deleted
-- meanwhile (aggregate_daily_restore.sql writes it again).
UPDATE token_usage_daily d
   SET events            = d.events + x.add_events,
       tokens            = d.tokens + x.add_tokens,
       prompt_tokens     = d.prompt_tokens + x.add_prompt_tokens,
       completion_tokens = d.completion_tokens + x.add_completion_tokens,
       messages          = d.messages + x.add_messages,
       bytes             = d.bytes + x.add_bytes,
       cost              = d.cost + x.add_cost
  FROM aggregate_daily_existing x
 WHERE d.user_id = x.user_id AND d.day = x.day AND d.kind = x.kind
   AND d.request_type = x.request_type AND d.model = x.model
   AND d.org_key = COALESCE(x.org_id, 0)
