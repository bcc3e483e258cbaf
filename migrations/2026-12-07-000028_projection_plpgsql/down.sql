-- ==== Written by scripts/sql-migration: the definitions as they were before ====
SET LOCAL check_function_bodies = off;

CREATE OR REPLACE FUNCTION usage_projected_exhaustion(p_used numeric, p_limit numeric, p_period_start timestamp with time zone, p_period_end timestamp with time zone, p_at timestamp with time zone)
 RETURNS timestamp with time zone
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$
    SELECT CASE
           WHEN p_limit IS NULL OR p_used IS NULL OR p_used <= 0 OR p_limit < 0
                OR p_at <= p_period_start OR p_at >= p_period_end THEN NULL
           WHEN p_limit * extract(epoch FROM p_at - p_period_start)
                >= p_used * extract(epoch FROM p_period_end - p_period_start) THEN NULL
           ELSE p_period_start
                + make_interval(secs => (p_limit * extract(epoch FROM p_at - p_period_start) / p_used)::float8)
           END
$function$;
-- ==== End of the written part ====
