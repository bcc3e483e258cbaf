-- usage_periods_add_batch as migration 3 defined it: every event located with its own probes.
CREATE OR REPLACE FUNCTION usage_periods_add_batch() RETURNS bigint
LANGUAGE plpgsql SET jit = off AS $$
DECLARE
    opened bigint := 0;
    added  bigint;
BEGIN
    DROP TABLE IF EXISTS usage_batch_users, usage_batch_homeless;
    CREATE TEMP TABLE usage_batch_users ON COMMIT DROP AS
    SELECT b.user_id, u.timezone, u.billing_anchor_day,
           CASE WHEN usage_timezone_is_valid(u.timezone) THEN u.timezone ELSE 'UTC' END AS zone
      FROM (SELECT DISTINCT user_id FROM aggregate_batch) b
      LEFT JOIN users u ON u.id = b.user_id;
    ANALYZE usage_batch_users;

    LOOP
        DROP TABLE IF EXISTS usage_batch_homeless;
        -- Events no period contains yet, one representative (the earliest) per local day.
        CREATE TEMP TABLE usage_batch_homeless ON COMMIT DROP AS
        SELECT b.user_id, p.period, min(b.created_at) AS first_at
          FROM aggregate_batch b
          JOIN usage_batch_users z ON z.user_id = b.user_id
         CROSS JOIN (VALUES ('day'), ('month')) AS p (period)
         WHERE NOT EXISTS (SELECT 1 FROM usage_periods up
                            WHERE up.user_id = b.user_id AND up.period = p.period
                              AND up.period_start <= b.created_at AND up.period_end > b.created_at)
         GROUP BY b.user_id, p.period, (b.created_at AT TIME ZONE z.zone)::date;
        EXIT WHEN NOT EXISTS (SELECT 1 FROM usage_batch_homeless);
        ANALYZE usage_batch_homeless;

        WITH bounded AS (
            SELECT DISTINCT h.user_id, h.period,
                   GREATEST(b.period_start, prev.period_end) AS period_start,
                   LEAST(b.period_end, nxt.period_start) AS period_end
              FROM usage_batch_homeless h
              JOIN usage_batch_users z ON z.user_id = h.user_id
             CROSS JOIN LATERAL usage_period_bounds(z.zone, z.billing_anchor_day, h.period, h.first_at) b
              LEFT JOIN LATERAL (SELECT up.period_end FROM usage_periods up
                                  WHERE up.user_id = h.user_id AND up.period = h.period
                                    AND up.period_start <= h.first_at
                                  ORDER BY up.period_start DESC LIMIT 1) prev ON true
              LEFT JOIN LATERAL (SELECT up.period_start FROM usage_periods up
                                  WHERE up.user_id = h.user_id AND up.period = h.period
                                    AND up.period_start > h.first_at
                                  ORDER BY up.period_start LIMIT 1) nxt ON true
        ), inserted AS (
            INSERT INTO usage_periods (user_id, period, period_start, period_end)
            SELECT user_id, period, period_start, period_end FROM bounded
            ON CONFLICT DO NOTHING
            RETURNING 1
        )
        SELECT count(*) INTO added FROM inserted;
        IF added = 0 THEN
            -- Cannot happen while periods never overlap; refuse rather than miscount.
            RAISE EXCEPTION 'usage_periods_add_batch: events of user % at % fit no period and none can be opened',
                  (SELECT user_id FROM usage_batch_homeless LIMIT 1), (SELECT first_at FROM usage_batch_homeless LIMIT 1);
        END IF;
        opened := opened + added;
    END LOOP;

    WITH located AS (
        SELECT b.user_id, p.period, up.period_start, b.kind,
               count(*) AS requests, sum(b.messages) AS messages, sum(b.tokens) AS tokens,
               sum(b.bytes) AS bytes, sum(b.cost) AS cost
          FROM aggregate_batch b
         CROSS JOIN (VALUES ('day'), ('month')) AS p (period)
         CROSS JOIN LATERAL (SELECT up.period_start FROM usage_periods up
                              WHERE up.user_id = b.user_id AND up.period = p.period
                                AND up.period_start <= b.created_at
                              ORDER BY up.period_start DESC LIMIT 1) up
         GROUP BY 1, 2, 3, 4
    ), per_kind AS (
        INSERT INTO usage_period_kind_totals AS t
               (user_id, period, period_start, kind, requests, messages, tokens, bytes, cost)
        SELECT user_id, period, period_start, kind, requests, messages, tokens, bytes, cost
          FROM located
        ON CONFLICT (user_id, period, period_start, kind) DO UPDATE
           SET requests = t.requests + EXCLUDED.requests,
               messages = t.messages + EXCLUDED.messages,
               tokens   = t.tokens + EXCLUDED.tokens,
               bytes    = t.bytes + EXCLUDED.bytes,
               cost     = t.cost + EXCLUDED.cost
    )
    UPDATE usage_periods up
       SET requests = up.requests + s.requests,
           messages = up.messages + s.messages,
           tokens   = up.tokens + s.tokens,
           bytes    = up.bytes + s.bytes,
           cost     = up.cost + s.cost
      FROM (SELECT user_id, period, period_start, sum(requests) AS requests, sum(messages) AS messages,
                   sum(tokens) AS tokens, sum(bytes) AS bytes, sum(cost) AS cost
              FROM located GROUP BY 1, 2, 3) s
     WHERE up.user_id = s.user_id AND up.period = s.period AND up.period_start = s.period_start;

    DROP TABLE usage_batch_users, usage_batch_homeless;
    RETURN opened;
END;
$$;
DROP FUNCTION usage_periods_add_exact();
