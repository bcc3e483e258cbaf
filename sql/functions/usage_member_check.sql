-- usage_member_check(user_id, org_id): refuses usage in an organization by a user who is not
-- one of its members (SQLSTATE 23503, constraint usage_record_org_member); nothing for
-- personal usage (org_id NULL). What usage_record() and usage_check() check first.
CREATE OR REPLACE FUNCTION usage_member_check(p_user_id bigint, p_org_id bigint)
RETURNS void
LANGUAGE plpgsql
STABLE
AS $$
BEGIN
    IF p_org_id IS NOT NULL AND NOT EXISTS (
           SELECT 1 FROM organization_members m WHERE m.org_id = p_org_id AND m.user_id = p_user_id) THEN
        RAISE EXCEPTION 'usage_record: user % is not a member of organization %', p_user_id, p_org_id
              USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'usage_record_org_member',
                    HINT = 'add the user to organization_members, or record the usage as personal (p_org_id => NULL)';
    END IF;
END;
$$;
