-- Adds the batch (grouped in aggregate_groups) into token_usage_daily: one row per (user,
-- local day, kind, request_type, model, organization), created or increased. Adding (not
-- recomputing) is what keeps the cost of a run proportional to the new events. The overflow
-- checks have already set aside whatever would take a sum past bigint.
INSERT INTO token_usage_daily AS d
       (user_id, day, kind, request_type, model, org_id, events, tokens, prompt_tokens,
        completion_tokens, messages, bytes, cost)
SELECT g.user_id, g.day, g.kind, g.request_type, g.model, g.org_id, g.events, g.tokens,
       g.prompt_tokens, g.completion_tokens, g.messages, g.bytes, g.cost
  FROM aggregate_groups g
ON CONFLICT (user_id, day, kind, request_type, model, org_key) DO UPDATE
   SET events            = d.events + EXCLUDED.events,
       tokens            = d.tokens + EXCLUDED.tokens,
       prompt_tokens     = d.prompt_tokens + EXCLUDED.prompt_tokens,
       completion_tokens = d.completion_tokens + EXCLUDED.completion_tokens,
       messages          = d.messages + EXCLUDED.messages,
       bytes             = d.bytes + EXCLUDED.bytes,
       cost              = d.cost + EXCLUDED.cost
