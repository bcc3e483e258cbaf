-- usage_hmac_sha256(key, message): HMAC-SHA256 (RFC 2104) from the built-in sha256(), so
-- verifying an unsubscribe token needs no extension. Keys longer than the 64-byte block are
-- hashed first, shorter ones padded with zero bytes.
CREATE OR REPLACE FUNCTION usage_hmac_sha256(p_key bytea, p_message bytea)
RETURNS bytea
LANGUAGE plpgsql
IMMUTABLE
STRICT
PARALLEL SAFE
AS $$
DECLARE
    v_key   bytea := CASE WHEN length(p_key) > 64 THEN sha256(p_key) ELSE p_key END;
    v_inner bytea;
    v_outer bytea;
BEGIN
    v_key := v_key || decode(repeat('00', 64 - length(v_key)), 'hex');
    v_inner := v_key;
    v_outer := v_key;
    FOR i IN 0..63 LOOP
        v_inner := set_byte(v_inner, i, get_byte(v_key, i) # 54);  -- 0x36
        v_outer := set_byte(v_outer, i, get_byte(v_key, i) # 92);  -- 0x5c
    END LOOP;
    RETURN sha256(v_outer || sha256(v_inner || p_message));
END;
$$;
