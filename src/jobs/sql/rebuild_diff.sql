-- Summary rows of day $1 (user $2 or all) that differ from rebuild_fresh: missing, extra or
-- with other sums. `summary_*` is what the table holds, `raw_*` what the events say. Owners
-- in rebuild_partial are left out on both sides. COALESCE(org_id, 0) keys personal rows
-- (org_id NULL) apart from each organization's.
SELECT COALESCE(f.user_id, d.user_id) AS user_id,
       COALESCE(f.org_id, d.org_id) AS org_id,
       COALESCE(f.kind, d.kind) AS kind,
       COALESCE(f.request_type, d.request_type) AS request_type,
       COALESCE(f.model, d.model) AS model,
       d.events AS summary_events, f.events AS raw_events,
       d.tokens AS summary_tokens, f.tokens AS raw_tokens,
       d.cost::text AS summary_cost, f.cost::text AS raw_cost
  FROM rebuild_fresh f
  FULL JOIN (SELECT * FROM token_usage_daily t
              WHERE t.day = $1::date AND ($2::bigint IS NULL OR t.user_id = $2::bigint)
                AND NOT EXISTS (SELECT 1 FROM rebuild_partial p
                                 WHERE p.user_id = t.user_id
                                   AND COALESCE(p.org_id, 0) = COALESCE(t.org_id, 0))) d
    ON d.user_id = f.user_id AND COALESCE(d.org_id, 0) = COALESCE(f.org_id, 0)
   AND d.kind = f.kind AND d.request_type = f.request_type AND d.model = f.model
 WHERE (d.events, d.tokens, d.prompt_tokens, d.completion_tokens, d.messages, d.bytes, d.cost)
       IS DISTINCT FROM
       (f.events, f.tokens, f.prompt_tokens, f.completion_tokens, f.messages, f.bytes, f.cost)
 ORDER BY 1, 2 NULLS FIRST, 3, 4, 5
