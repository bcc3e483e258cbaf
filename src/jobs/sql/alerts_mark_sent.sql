-- Delivered: the transport accepted the message. Only rows still claimed are changed.
-- $1 alert ids (bigint[]), $2 their Message-IDs (text[]), $3 now.
UPDATE quota_alerts a
   SET status = 'sent',
       message_id = s.message_id,
       sent_at = $3,
       leased_until = NULL,
       updated_at = now()
  FROM unnest($1::bigint[], $2::text[]) AS s (id, message_id)
 WHERE a.id = s.id
   AND a.status = 'sending'
