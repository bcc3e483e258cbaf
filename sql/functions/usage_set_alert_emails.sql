-- usage_set_alert_emails(user_id, preference): which alert emails a user receives, as the
-- application's "manage notifications" page sets it: 'all' (the default), 'quota' (quota
-- and forecast alerts only), 'credit' (credit alerts only) or 'none'. Returns the preference
-- now in effect: 'none' while users.alerts_enabled is false, whatever is stored. Alerts that
-- the preference leaves out are recorded `unsubscribed` (no email); webhooks are not
-- affected. SQLSTATE 22023 for another preference, 23503 for an unknown user.
-- SECURITY DEFINER: the caller needs no UPDATE on users.
CREATE OR REPLACE FUNCTION usage_set_alert_emails(p_user_id bigint, p_preference text)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    v_effective text;
BEGIN
    IF p_preference IS NULL OR p_preference NOT IN ('all', 'quota', 'credit', 'none') THEN
        RAISE EXCEPTION 'usage_set_alert_emails: p_preference % is not one of all, quota, credit, none; nothing changed', quote_nullable(p_preference)
              USING ERRCODE = '22023';
    END IF;
    UPDATE users u SET alert_emails = p_preference WHERE u.id = p_user_id
    RETURNING CASE WHEN u.alerts_enabled THEN u.alert_emails ELSE 'none' END INTO v_effective;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'usage_set_alert_emails: user % does not exist; nothing changed', p_user_id
              USING ERRCODE = '23503';
    END IF;
    RETURN v_effective;
END;
$$;
REVOKE EXECUTE ON FUNCTION usage_set_alert_emails(bigint, text) FROM PUBLIC;
