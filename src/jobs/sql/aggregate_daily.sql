-- Adds the batch (grouped in aggregate_groups) into token_usage_daily: one row per (user,
-- local day, kind, request_type, model, organization), created or increased. Adding (not
-- recomputing) is what keeps the cost of a run proportional to the new events. The overflow
-- checks have already set aside whatever would take a sum past bigint. This statement
-- inserts the groups without a row (not in aggregate_daily_existing) plainly, with no
-- per-row conflict check; aggregate_daily_increase.sql increases the others.
INSERT INTO token_usage_daily
       (user_id, day, kind, request_type, model, org_id, events, tokens, prompt_tokens,
        completion_tokens, messages, bytes, cost)
SELECT g.user_id, g.day, g.kind, g.request_type, g.model, g.org_id, g.events, g.tokens,
       g.prompt_tokens, g.completion_tokens, g.messages, g.bytes, g.cost
  FROM aggregate_groups g
 WHERE NOT EXISTS (SELECT 1 FROM aggregate_daily_existing x
                    WHERE x.user_id = g.user_id AND x.day = g.day AND x.kind = g.kind
                      AND x.request_type = g.request_type AND x.model = g.model
                      AND x.org_id IS NOT DISTINCT FROM g.org_id)
