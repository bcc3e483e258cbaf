-- Not delivered. Permanent failures (4xx, 410, a redirect) and the last allowed attempt become
-- `failed`; others go back to `pending` with the alerts' backoff:
-- backoff_base × 2^(attempts − 1), at most backoff_max.
-- $1 ids (bigint[]), $2 error classes (text[]), $3 messages (text[]), $4 permanent (bool[]),
-- $5 status codes (int[], NULL when there was no answer), $6 now, $7 alerts.max_attempts,
-- $8 backoff_base seconds, $9 backoff_max seconds.
UPDATE webhook_deliveries d
   SET status = CASE WHEN f.permanent OR d.attempts >= $7 THEN 'failed' ELSE 'pending' END,
       next_attempt_at = $6 + make_interval(secs => LEAST($8 * power(2, d.attempts - 1), $9)),
       leased_until = NULL,
       last_status_code = f.code,
       error_class = f.class,
       last_error = f.message,
       updated_at = now()
  FROM unnest($1::bigint[], $2::text[], $3::text[], $4::boolean[], $5::int[])
       AS f (id, class, message, permanent, code)
 WHERE d.id = f.id
   AND d.status = 'sending'
RETURNING d.status
