-- Replaces the summary rows of day $1 (user $2 or all) by rebuild_fresh: rows the events no
-- longer support go, the others are written only where they differ. The rows of owners in
-- rebuild_partial stay as they are.
WITH removed AS (
    DELETE FROM token_usage_daily d
     WHERE d.day = $1::date
       AND ($2::bigint IS NULL OR d.user_id = $2::bigint)
       AND NOT EXISTS (SELECT 1 FROM rebuild_partial p
                        WHERE p.user_id = d.user_id
                          AND COALESCE(p.org_id, 0) = COALESCE(d.org_id, 0))
       AND NOT EXISTS (SELECT 1 FROM rebuild_fresh f
                        WHERE f.user_id = d.user_id
                          AND COALESCE(f.org_id, 0) = COALESCE(d.org_id, 0)
                          AND f.kind = d.kind AND f.request_type = d.request_type
                          AND f.model = d.model)
 RETURNING 1
)
INSERT INTO token_usage_daily AS d
       (user_id, day, kind, request_type, model, org_id, events, tokens, prompt_tokens,
        completion_tokens, messages, bytes, cost)
SELECT user_id, day, kind, request_type, model, org_id, events, tokens, prompt_tokens,
       completion_tokens, messages, bytes, cost
  FROM rebuild_fresh
ON CONFLICT (user_id, day, kind, request_type, model, org_key) DO UPDATE
   SET events            = EXCLUDED.events,
       tokens            = EXCLUDED.tokens,
       prompt_tokens     = EXCLUDED.prompt_tokens,
       completion_tokens = EXCLUDED.completion_tokens,
       messages          = EXCLUDED.messages,
       bytes             = EXCLUDED.bytes,
       cost              = EXCLUDED.cost
 WHERE (d.events, d.tokens, d.prompt_tokens, d.completion_tokens, d.messages, d.bytes, d.cost)
       IS DISTINCT FROM
       (EXCLUDED.events, EXCLUDED.tokens, EXCLUDED.prompt_tokens, EXCLUDED.completion_tokens,
        EXCLUDED.messages, EXCLUDED.bytes, EXCLUDED.cost)
