-- usage_grant_allocate(grants…, periods…, cuts…): THE drawdown rule, on arrays, reading no
-- table: what each grant gives in each period. usage_grant_ledger() (one subject, live or
-- counted) and usage_grant_settle() (every flagged subject at once, counted) gather the
-- arrays and call it.
-- - Grants g_id, g_from (starts_at), g_to (expiry, or void if earlier), g_amount: sorted
--   earliest expiry first, then by id: the order they are drawn in.
-- - Periods p_start, p_end, p_used (the usage of the metric and kind in the period),
--   p_limit (the plan's limit; NULL: unlimited, nothing drawn): sorted by start.
-- - Cuts c_since, c_at, c_used: for an instant `at` inside a period starting at `since`
--   where a grant starts or ends, the usage of the period before it. A cut missing here
--   counts as no usage before it.
-- In each period, usage up to the limit is the plan's; the usage past it in each stretch
-- between cuts is drawn from the grants active through that stretch, in order, each at most
-- what it has left of its amount; the rest is over the limit, drawn from nothing.
CREATE OR REPLACE FUNCTION usage_grant_allocate(g_id bigint[], g_from timestamptz[], g_to timestamptz[], g_amount numeric[], p_start timestamptz[], p_end timestamptz[], p_used numeric[], p_limit numeric[], c_since timestamptz[], c_at timestamptz[], c_used numeric[])
RETURNS TABLE(grant_id bigint, period_start timestamptz, period_end timestamptz, drawn numeric)
LANGUAGE plpgsql
IMMUTABLE
AS $$
DECLARE
    n      integer := COALESCE(array_length(g_id, 1), 0);
    g_left numeric[] := g_amount;
    g_here numeric[];
    pts    timestamptz[];
    cum    numeric[];
    k      integer;
    v_at   timestamptz;
    v_over numeric;
    v_take numeric;
BEGIN
    IF n = 0 THEN
        RETURN;
    END IF;
    g_here := array_fill(0::numeric, ARRAY[n]);
    FOR j IN 1 .. COALESCE(array_length(p_start, 1), 0) LOOP
        CONTINUE WHEN p_limit[j] IS NULL OR p_used[j] <= p_limit[j];
        -- The period's cuts, in order (none, most often: grants that span it).
        pts := ARRAY[]::timestamptz[];
        FOR i IN 1 .. n LOOP
            FOREACH v_at IN ARRAY ARRAY[g_from[i], g_to[i]] LOOP
                IF v_at > p_start[j] AND v_at < p_end[j] AND NOT v_at = ANY (pts) THEN
                    k := COALESCE(array_length(pts, 1), 0);
                    pts := pts || v_at;
                    WHILE k >= 1 AND pts[k] > v_at LOOP
                        pts[k + 1] := pts[k];
                        pts[k] := v_at;
                        k := k - 1;
                    END LOOP;
                END IF;
            END LOOP;
        END LOOP;
        pts := ARRAY[p_start[j]] || pts || ARRAY[p_end[j]];
        -- The usage before each cut, never less than before the previous, never more than all.
        cum := ARRAY[0::numeric];
        FOR k IN 2 .. array_length(pts, 1) - 1 LOOP
            v_over := 0;
            FOR m IN 1 .. COALESCE(array_length(c_at, 1), 0) LOOP
                IF c_at[m] = pts[k] AND c_since[m] = p_start[j] THEN
                    v_over := c_used[m];
                    EXIT;
                END IF;
            END LOOP;
            cum := cum || LEAST(GREATEST(v_over, cum[k - 1]), p_used[j]);
        END LOOP;
        cum := cum || p_used[j];
        FOR k IN 1 .. array_length(pts, 1) - 1 LOOP
            v_over := GREATEST(cum[k + 1] - p_limit[j], 0) - GREATEST(cum[k] - p_limit[j], 0);
            CONTINUE WHEN v_over <= 0;
            FOR i IN 1 .. n LOOP
                EXIT WHEN v_over <= 0;
                IF g_from[i] <= pts[k] AND g_to[i] > pts[k] AND g_left[i] > 0 THEN
                    v_take := LEAST(v_over, g_left[i]);
                    g_left[i] := g_left[i] - v_take;
                    g_here[i] := g_here[i] + v_take;
                    v_over := v_over - v_take;
                END IF;
            END LOOP;
        END LOOP;
        FOR i IN 1 .. n LOOP
            IF g_here[i] > 0 THEN
                grant_id := g_id[i];
                period_start := p_start[j];
                period_end := p_end[j];
                drawn := g_here[i];
                RETURN NEXT;
                g_here[i] := 0;
            END IF;
        END LOOP;
    END LOOP;
END;
$$;
