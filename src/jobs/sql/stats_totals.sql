-- stats: the totals of local day $1 in token_usage_daily, over every user and organization:
-- active users, events, tokens and cost. Sums past 2^63-1 are reported as 2^63-1 with
-- `clamped` true rather than failing the job; a day without rows gives zeros.
SELECT count(DISTINCT user_id) AS active_users,
       LEAST(COALESCE(sum(events), 0), 9223372036854775807)::bigint AS events,
       LEAST(COALESCE(sum(tokens), 0), 9223372036854775807)::bigint AS tokens,
       COALESCE(sum(cost), 0)::text AS cost,
       COALESCE(GREATEST(sum(events), sum(tokens)) > 9223372036854775807, false) AS clamped
  FROM token_usage_daily WHERE day = $1
