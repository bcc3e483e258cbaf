-- Records the configured endpoints. An endpoint disabled by `410 Gone` is enabled again once
-- its configuration (URL or secrets: config_hash) has changed.
-- $1 endpoint keys (text[]), $2 hosts (text[]), $3 config hashes (text[]).
INSERT INTO webhook_endpoints (endpoint_key, host, config_hash)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
ON CONFLICT ON CONSTRAINT webhook_endpoints_key_unique DO UPDATE
   SET host = EXCLUDED.host,
       config_hash = EXCLUDED.config_hash,
       disabled_at = CASE WHEN webhook_endpoints.config_hash = EXCLUDED.config_hash
                          THEN webhook_endpoints.disabled_at END,
       disabled_reason = CASE WHEN webhook_endpoints.config_hash = EXCLUDED.config_hash
                              THEN webhook_endpoints.disabled_reason END,
       updated_at = CASE WHEN webhook_endpoints.config_hash = EXCLUDED.config_hash
                         THEN webhook_endpoints.updated_at ELSE now() END
RETURNING id, endpoint_key
