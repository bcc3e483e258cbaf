-- The token_usage_daily rows the batch adds to: what each holds and what its group adds
-- (add_*). One probe of the summary's primary key per group (org_key is COALESCE(org_id,
-- 0)). The overflow check reads it, and aggregate_daily*.sql insert the groups it lacks and
-- increase the rows it lists, found again by key. Only this transaction adds to the summary
-- (the watermark row is locked); a row deleted meanwhile (retention, by hand) is written
-- again by aggregate_daily_restore.sql. Made again whenever the batch is grouped again.
CREATE TEMP TABLE aggregate_daily_existing ON COMMIT DROP AS
SELECT g.user_id, g.org_id, g.day, g.kind, g.request_type, g.model,
       d.tokens, d.prompt_tokens, d.completion_tokens, d.messages, d.bytes,
       g.events AS add_events, g.tokens AS add_tokens, g.prompt_tokens AS add_prompt_tokens,
       g.completion_tokens AS add_completion_tokens, g.messages AS add_messages,
       g.bytes AS add_bytes, g.cost AS add_cost
  FROM aggregate_groups g
  JOIN token_usage_daily d
    ON d.user_id = g.user_id AND d.day = g.day AND d.kind = g.kind
   AND d.request_type = g.request_type AND d.model = g.model
   AND d.org_key = COALESCE(g.org_id, 0)
