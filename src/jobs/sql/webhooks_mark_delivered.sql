-- Delivered: the endpoint answered 2xx. Only rows still claimed are changed.
-- $1 delivery ids (bigint[]), $2 status codes (int[]), $3 now.
UPDATE webhook_deliveries d
   SET status = 'delivered',
       last_status_code = s.code,
       delivered_at = $3,
       leased_until = NULL,
       updated_at = now()
  FROM unnest($1::bigint[], $2::int[]) AS s (id, code)
 WHERE d.id = s.id
   AND d.status = 'sending'
