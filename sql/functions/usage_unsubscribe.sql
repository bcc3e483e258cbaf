-- usage_unsubscribe(token): applies the unsubscribe token of a List-Unsubscribe link (the
-- `token` query parameter the daemon put in an alert email's header), as the application's
-- one-click endpoint receives it. Returns the user and the alert emails they now receive
-- (users.alert_emails); no row when the user no longer exists.
--
-- A token is `u1.<user id>.<scope>.<expires, Unix seconds>.<key id>.<HMAC-SHA256, hex>`:
-- scope `all` (the header's: every alert email off), `quota` or `credit` (that kind off).
-- The MAC is over everything before it, keyed by the signing key the daemon registered in
-- usage_unsubscribe_keys (derived from mail.unsubscribe_secret; key id = the first 16 hex
-- digits of its SHA-256). Refused with SQLSTATE 22023, changing nothing, when the token is
-- malformed, was signed by another installation (unknown key), was altered (MAC mismatch)
-- or has expired. Applying it twice is harmless. SECURITY DEFINER: the caller needs no
-- privilege on the keys or on users.
CREATE OR REPLACE FUNCTION usage_unsubscribe(p_token text)
RETURNS TABLE(user_id bigint, unsubscribed text, alert_emails text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
#variable_conflict use_column
DECLARE
    v_parts   text[];
    v_user    bigint;
    v_scope   text;
    v_expires bigint;
    v_key     bytea;
BEGIN
    v_parts := regexp_match(COALESCE(p_token, ''),
        '^u1\.([0-9]{1,18})\.(all|quota|credit)\.([0-9]{1,12})\.([0-9a-f]{16})\.([0-9a-f]{64})$');
    IF v_parts IS NULL THEN
        RAISE EXCEPTION 'usage_unsubscribe: not an unsubscribe token; nothing changed'
              USING ERRCODE = '22023',
                    HINT = 'pass the token query parameter of the List-Unsubscribe link as it is';
    END IF;
    v_user := v_parts[1]::bigint;
    v_scope := v_parts[2];
    v_expires := v_parts[3]::bigint;
    SELECT k.signing_key INTO v_key FROM usage_unsubscribe_keys k WHERE k.key_id = v_parts[4];
    IF NOT FOUND THEN
        RAISE EXCEPTION 'usage_unsubscribe: the token was signed by another installation (key % is unknown here); nothing changed', v_parts[4]
              USING ERRCODE = '22023',
                    HINT = 'only tokens from this installation''s alert emails are accepted';
    END IF;
    IF encode(usage_hmac_sha256(v_key, convert_to(left(p_token, length(p_token) - 65), 'UTF8')), 'hex')
       <> v_parts[5] THEN
        RAISE EXCEPTION 'usage_unsubscribe: the token''s signature does not match: it was altered; nothing changed'
              USING ERRCODE = '22023',
                    HINT = 'pass the token query parameter of the List-Unsubscribe link as it is';
    END IF;
    IF v_expires < extract(epoch FROM now()) THEN
        RAISE EXCEPTION 'usage_unsubscribe: the token of user % expired at %; nothing changed',
              v_user, to_timestamp(v_expires)
              USING ERRCODE = '22023',
                    HINT = 'a newer alert email carries a fresh token; preferences can also be changed with usage_set_alert_emails()';
    END IF;
    RETURN QUERY
    UPDATE users u
       SET alert_emails = CASE WHEN v_scope = 'all' OR u.alert_emails IN ('none', v_scope) THEN 'none'
                               WHEN u.alert_emails = 'all'
                               THEN CASE v_scope WHEN 'quota' THEN 'credit' ELSE 'quota' END
                               ELSE u.alert_emails END
     WHERE u.id = v_user
    RETURNING u.id, v_scope, u.alert_emails;
END;
$$;
REVOKE EXECUTE ON FUNCTION usage_unsubscribe(text) FROM PUBLIC;
