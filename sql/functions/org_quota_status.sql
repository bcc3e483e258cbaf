-- org_quota_status(org_id, at = now()): an organization's shared quota state at `at`, in its
-- own zone and billing anchor; see usage_subject_status(). Nothing when the organization is
-- not in organizations, or not visible to the caller (row-level security).
-- PL/pgSQL, not SQL: a SQL function with a SET clause is never inlined, and PostgreSQL sets its
-- body up again for every statement that calls it (0.1–0.2 ms of each call); PL/pgSQL keeps
-- it compiled for the session.
CREATE OR REPLACE FUNCTION org_quota_status(p_org_id bigint, p_at timestamptz DEFAULT now())
RETURNS TABLE(metric text, period text, kind text, used numeric, limit_value numeric, remaining numeric, unlimited boolean, exceeded boolean, percent numeric, period_start timestamptz, period_end timestamptz, enforcement text, granted numeric, grant_remaining numeric, projected_exhaustion timestamptz)
LANGUAGE plpgsql
STABLE
SET search_path FROM CURRENT
AS $$
BEGIN
    -- Organization ids are positive: (0, 0) would be user 0's personal usage.
    IF p_org_id > 0 THEN
        RETURN QUERY SELECT * FROM usage_subject_status(0, p_org_id, p_at);
    END IF;
END;
$$;
