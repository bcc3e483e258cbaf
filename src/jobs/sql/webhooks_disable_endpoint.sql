-- alerts, an endpoint answered `410 Gone`: the webhook_endpoints row of key $1 is disabled
-- at $2 with reason $3, unless it already is; it is not called again until its URL or
-- secrets change.
UPDATE webhook_endpoints
   SET disabled_at = $2, disabled_reason = $3, updated_at = now()
 WHERE endpoint_key = $1 AND disabled_at IS NULL
