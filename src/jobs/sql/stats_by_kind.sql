-- stats: the totals of local day $1 in token_usage_daily per event kind, most events first,
-- at most $2 kinds (NULL: every kind; `LIMIT NULL` is no limit). Sums past 2^63-1 are
-- clamped as in stats_totals.sql.
SELECT kind AS name, count(DISTINCT user_id) AS active_users,
       LEAST(sum(events), 9223372036854775807)::bigint AS events,
       LEAST(sum(tokens), 9223372036854775807)::bigint AS tokens, sum(cost)::text AS cost,
       GREATEST(sum(events), sum(tokens)) > 9223372036854775807 AS clamped
  FROM token_usage_daily WHERE day = $1
 GROUP BY kind ORDER BY sum(events) DESC, kind LIMIT $2
