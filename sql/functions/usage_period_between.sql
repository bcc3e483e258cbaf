-- usage_period_between(natural_start, natural_end, prev_end, next_start): the bounds of a new
-- period: its natural bounds (usage_period_bounds) trimmed to its neighbours, so that a
-- subject's periods never overlap: from the later of its natural start and the previous
-- period's end, to the earlier of its natural end and the next period's start (NULL: no such
-- neighbour). An inlined SQL function.
CREATE OR REPLACE FUNCTION usage_period_between(p_natural_start timestamptz, p_natural_end timestamptz, p_prev_end timestamptz, p_next_start timestamptz)
RETURNS TABLE(period_start timestamptz, period_end timestamptz)
LANGUAGE sql
IMMUTABLE PARALLEL SAFE
ROWS 1
AS $$
    SELECT GREATEST(p_natural_start, p_prev_end), LEAST(p_natural_end, p_next_start)
$$;
