-- Registers the key that signs this daemon's unsubscribe tokens, so usage_unsubscribe() can
-- verify them: $1 key id (16 hex digits), $2 the signing key (32 bytes, derived from
-- mail.unsubscribe_secret). Keys of earlier secrets stay, so links already mailed keep working
-- after a rotation; delete a row to revoke its tokens.
INSERT INTO usage_unsubscribe_keys (key_id, signing_key) VALUES ($1, $2)
ON CONFLICT (key_id) DO NOTHING
