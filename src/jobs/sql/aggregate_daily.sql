-- Adds the batch into token_usage_daily: one row per (user, local day, kind, request_type,
-- model), created or increased. Adding (not recomputing) is what keeps the cost of a run
-- proportional to the new events.
INSERT INTO token_usage_daily AS d
       (user_id, day, kind, request_type, model, events, tokens, prompt_tokens,
        completion_tokens, messages, bytes, cost)
SELECT b.user_id,
       (b.created_at AT TIME ZONE z.zone)::date,
       b.kind, b.request_type, b.model,
       count(*), sum(b.tokens), sum(b.prompt_tokens), sum(b.completion_tokens),
       sum(b.messages), sum(b.bytes), sum(b.cost)
  FROM aggregate_batch b
  JOIN aggregate_zones z ON z.user_id = b.user_id
 GROUP BY 1, 2, 3, 4, 5
 ORDER BY 1, 2, 3, 4, 5
ON CONFLICT (user_id, day, kind, request_type, model) DO UPDATE
   SET events            = d.events + EXCLUDED.events,
       tokens            = d.tokens + EXCLUDED.tokens,
       prompt_tokens     = d.prompt_tokens + EXCLUDED.prompt_tokens,
       completion_tokens = d.completion_tokens + EXCLUDED.completion_tokens,
       messages          = d.messages + EXCLUDED.messages,
       bytes             = d.bytes + EXCLUDED.bytes,
       cost              = d.cost + EXCLUDED.cost
