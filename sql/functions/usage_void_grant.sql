-- usage_void_grant(id, reason): ends a grant now: what it has not given by now it never
-- gives; what it gave stays drawn. The row stays, with who voided it, when and why. Refused
-- (SQLSTATE 22023, nothing changed) for an unknown grant or one voided already; a grant
-- voided before it starts never gives anything.
CREATE OR REPLACE FUNCTION usage_void_grant(p_grant_id bigint, p_reason text DEFAULT ''::text)
RETURNS timestamptz
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    g record;
BEGIN
    SELECT * INTO g FROM usage_grants WHERE id = p_grant_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'usage_void_grant: grant % does not exist', COALESCE(p_grant_id::text, 'NULL')
              USING ERRCODE = '22023';
    END IF;
    IF g.voided_at IS NOT NULL THEN
        RAISE EXCEPTION 'usage_void_grant: grant % was voided already, at % by %', p_grant_id, g.voided_at, g.voided_by
              USING ERRCODE = '22023', HINT = 'a grant is voided once; nothing was changed';
    END IF;
    UPDATE usage_grants
       SET voided_at = now(), voided_by = session_user, void_reason = COALESCE(p_reason, ''),
           settled = false
     WHERE id = p_grant_id;
    RETURN now();
END;
$$;
