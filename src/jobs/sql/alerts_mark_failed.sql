-- Not delivered. Permanent failures (5xx, unusable address) and the last allowed attempt
-- become `failed`; others go back to `pending` with exponential backoff:
-- backoff_base × 2^(attempts − 1), at most backoff_max.
-- $1 ids (bigint[]), $2 error classes (text[]), $3 messages (text[]), $4 permanent (bool[]),
-- $5 now, $6 alerts.max_attempts, $7 backoff_base seconds, $8 backoff_max seconds.
UPDATE quota_alerts a
   SET status = CASE WHEN f.permanent OR a.attempts >= $6 THEN 'failed' ELSE 'pending' END,
       next_attempt_at = $5 + make_interval(secs => LEAST($7 * power(2, a.attempts - 1), $8)),
       leased_until = NULL,
       last_error = f.message,
       error_class = f.class,
       updated_at = now()
  FROM unnest($1::bigint[], $2::text[], $3::text[], $4::boolean[]) AS f (id, class, message, permanent)
 WHERE a.id = f.id
   AND a.status = 'sending'
RETURNING a.id, a.status
