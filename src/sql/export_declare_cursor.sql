-- Opens the cursor token_usage_export (read a batch at a time with FETCH, then closed) over
-- the rows of token_usage_daily for local days $1..=$2, of everyone or, when given, of one
-- user ($3 user_id: personal usage and usage in any organization) or one organization ($4
-- org_id: the usage spent in it, by all its members); NULL: no such filter. Ordered by user
-- and day, personal usage (org_id NULL) first; cost as its exact decimal text.
DECLARE token_usage_export NO SCROLL CURSOR FOR
SELECT user_id, day, kind, request_type, model, events, tokens, prompt_tokens,
       completion_tokens, messages, bytes, cost::text AS cost, org_id
  FROM token_usage_daily
 WHERE day BETWEEN $1 AND $2
   AND ($3::bigint IS NULL OR user_id = $3::bigint)
   AND ($4::bigint IS NULL OR org_id = $4::bigint)
 ORDER BY user_id, day, kind, request_type, model, org_id NULLS FIRST
