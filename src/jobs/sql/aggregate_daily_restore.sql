-- Summary rows listed in aggregate_daily_existing but deleted before this transaction
-- increased them (retention, or by hand): their groups are written again, so that no event
-- goes uncounted. A key that has a row is the row the increase reached (nothing else writes
-- the summary). Runs only when the increase touched fewer rows than were listed.
INSERT INTO token_usage_daily AS d
       (user_id, day, kind, request_type, model, org_id, events, tokens, prompt_tokens,
        completion_tokens, messages, bytes, cost)
SELECT x.user_id, x.day, x.kind, x.request_type, x.model, x.org_id, x.add_events,
       x.add_tokens, x.add_prompt_tokens, x.add_completion_tokens, x.add_messages,
       x.add_bytes, x.add_cost
  FROM aggregate_daily_existing x
 WHERE NOT EXISTS (SELECT 1 FROM token_usage_daily t
                    WHERE t.user_id = x.user_id AND t.day = x.day AND t.kind = x.kind
                      AND t.request_type = x.request_type AND t.model = x.model
                      AND t.org_key = COALESCE(x.org_id, 0))
ON CONFLICT (user_id, day, kind, request_type, model, org_key) DO UPDATE
   SET events            = d.events + EXCLUDED.events,
       tokens            = d.tokens + EXCLUDED.tokens,
       prompt_tokens     = d.prompt_tokens + EXCLUDED.prompt_tokens,
       completion_tokens = d.completion_tokens + EXCLUDED.completion_tokens,
       messages          = d.messages + EXCLUDED.messages,
       bytes             = d.bytes + EXCLUDED.bytes,
       cost              = d.cost + EXCLUDED.cost
