-- usage_event_amounts(kind, tokens, prompt_tokens, completion_tokens, bytes, cost, model, at):
-- what an event given to usage_record() or usage_check() amounts to: `tokens` at least
-- prompt + completion tokens, and `cost` as given or, when NULL, from the prices table (per
-- event + per 1k prompt and completion tokens + per 1k of the remaining tokens + per MB; the
-- row for the model, else the kind's, with the latest valid_from at or before `at`).
-- Amounts past the column types come back clamped just past the bounds, so the constraint
-- that names the bound refuses them (usage_events_*_in_range), as for a plain INSERT.
-- An inlined SQL function: called in FROM, it costs usage_record() no call of its own, and
-- the price is a join, so it is looked up once (a scalar subquery used three times would be
-- planned three times).
CREATE OR REPLACE FUNCTION usage_event_amounts(p_kind text, p_tokens bigint, p_prompt_tokens bigint, p_completion_tokens bigint, p_bytes bigint, p_cost numeric, p_model text, p_at timestamptz)
RETURNS TABLE(tokens bigint, cost numeric)
LANGUAGE sql
STABLE
AS $$
    SELECT t.tokens,
           -- Within numeric(20, 8) but past the bounds, so usage_events_cost_in_range (or
           -- _not_negative) refuses it; NaN stays NaN, which the bound refuses as well.
           COALESCE(CASE WHEN COALESCE(p_cost, p.cost) <> 'NaN'::numeric
                         THEN GREATEST(LEAST(COALESCE(p_cost, p.cost), 100000000000), -1)
                         ELSE COALESCE(p_cost, p.cost) END, 0)
      FROM (SELECT LEAST(GREATEST(COALESCE(p_tokens, 0)::numeric,
                                  COALESCE(p_prompt_tokens, 0)::numeric
                                  + COALESCE(p_completion_tokens, 0)::numeric),
                         9223372036854775807)::bigint AS tokens) t
      -- The price in force at p_at: the model's row, else the kind's; looked up only without
      -- p_cost. A join, not a scalar subquery, so it is looked up once per call.
      LEFT JOIN LATERAL (
            SELECT p.per_event
                 + COALESCE(p_prompt_tokens, 0) * p.per_1k_prompt_tokens / 1000
                 + COALESCE(p_completion_tokens, 0) * p.per_1k_completion_tokens / 1000
                 + GREATEST(t.tokens - COALESCE(p_prompt_tokens, 0)::numeric
                            - COALESCE(p_completion_tokens, 0)::numeric, 0)
                   * p.per_1k_tokens / 1000
                 + COALESCE(p_bytes, 0) * p.per_mb / 1048576 AS cost
              FROM prices p
             WHERE p.kind = p_kind
               AND p.model IN (COALESCE(p_model, ''), '')
               AND p.valid_from <= p_at
             ORDER BY (p.model = '') ASC, p.valid_from DESC
             LIMIT 1) p ON p_cost IS NULL
$$;
