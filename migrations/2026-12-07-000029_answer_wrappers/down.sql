-- ==== Written by scripts/sql-migration: the definitions as they were before ====
SET LOCAL check_function_bodies = off;

CREATE OR REPLACE FUNCTION org_quota_status(p_org_id bigint, p_at timestamp with time zone DEFAULT now())
 RETURNS TABLE(metric text, period text, kind text, used numeric, limit_value numeric, remaining numeric, unlimited boolean, exceeded boolean, percent numeric, period_start timestamp with time zone, period_end timestamp with time zone, enforcement text, granted numeric, grant_remaining numeric, projected_exhaustion timestamp with time zone)
 LANGUAGE sql
 STABLE
 SET search_path FROM CURRENT
AS $function$
    -- Organization ids are positive: (0, 0) would be user 0's personal usage.
    SELECT * FROM usage_subject_status(0, p_org_id, p_at) WHERE p_org_id > 0
$function$;

CREATE OR REPLACE FUNCTION quota_status(p_user_id bigint, p_at timestamp with time zone DEFAULT now())
 RETURNS TABLE(metric text, period text, kind text, used numeric, limit_value numeric, remaining numeric, unlimited boolean, exceeded boolean, percent numeric, period_start timestamp with time zone, period_end timestamp with time zone, enforcement text, granted numeric, grant_remaining numeric, projected_exhaustion timestamp with time zone)
 LANGUAGE sql
 STABLE
 SET search_path FROM CURRENT
AS $function$
    SELECT * FROM usage_subject_status(p_user_id, 0, p_at)
$function$;
-- ==== End of the written part ====
