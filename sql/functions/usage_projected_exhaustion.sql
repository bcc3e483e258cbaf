-- usage_projected_exhaustion(used, limit, period_start, period_end, at): the instant `used`
-- reaches `limit` if usage goes on at the average pace of the period so far, used / (at −
-- period_start): period_start + limit / used × (at − period_start). Already reached (used ≥
-- limit): when the average pace reached it, at or before `at`. NULL, never an instant of a
-- later period, when:
-- - there is no limit (NULL) or no usage (used ≤ 0), or no time has passed (at = period_start:
--   no pace yet);
-- - `at` is not inside [period_start, period_end);
-- - the instant would be at or after period_end: the period resets first.
-- The comparison is made in numeric before any interval is built, so a huge limit against a
-- tiny usage cannot overflow. IMMUTABLE and one expression: the planner inlines it.
CREATE OR REPLACE FUNCTION usage_projected_exhaustion(p_used numeric, p_limit numeric, p_period_start timestamptz, p_period_end timestamptz, p_at timestamptz)
RETURNS timestamptz
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
AS $$
    SELECT CASE
           WHEN p_limit IS NULL OR p_used IS NULL OR p_used <= 0 OR p_limit < 0
                OR p_at <= p_period_start OR p_at >= p_period_end THEN NULL
           WHEN p_limit * extract(epoch FROM p_at - p_period_start)
                >= p_used * extract(epoch FROM p_period_end - p_period_start) THEN NULL
           ELSE p_period_start
                + make_interval(secs => (p_limit * extract(epoch FROM p_at - p_period_start) / p_used)::float8)
           END
$$;
