-- usage_grant_settle(user_id, org_id): brings one subject's recorded drawdown up to date with
-- the books, in the aggregate job's transaction (which holds the watermark): the marks of
-- the instants that cut its periods (usage_grant_marks: counted usage of the period before
-- each grant's start, expiry or void inside a period that exists; stale ones, of a period a
-- manual reset moved, are made again), then usage_grant_draws, each grant's consumption per
-- period, from usage_grant_ledger over the counted events alone: inserted, updated where it
-- changed, deleted where it no longer holds. Marks its grants settled. Returns how many
-- draw rows changed.
CREATE OR REPLACE FUNCTION usage_grant_settle(p_user_id bigint, p_org_id bigint)
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    v_changed integer;
BEGIN
    DELETE FROM usage_grant_marks m
     WHERE m.user_id = p_user_id AND m.org_id = p_org_id
       AND (NOT EXISTS (SELECT 1 FROM usage_periods up
                         WHERE up.user_id = m.user_id AND up.org_id = m.org_id AND up.period = m.period
                           AND up.period_start = m.since AND up.period_end > m.at)
            OR NOT EXISTS (SELECT 1 FROM usage_grants g
                            WHERE g.user_id = m.user_id AND g.org_id = m.org_id AND g.period = m.period
                              AND g.kind = m.kind
                              AND m.at IN (g.starts_at, LEAST(g.expires_at, COALESCE(g.voided_at, 'infinity')))));
    INSERT INTO usage_grant_marks (user_id, org_id, period, kind, at, since, requests, messages, tokens, bytes, cost)
    SELECT p_user_id, p_org_id, c.period, c.kind, c.at, up.period_start, s.requests, s.messages, s.tokens, s.bytes, s.cost
      FROM (SELECT DISTINCT g.period, g.kind, x.at
              FROM usage_grants g
             CROSS JOIN LATERAL (VALUES (g.starts_at), (LEAST(g.expires_at, COALESCE(g.voided_at, 'infinity')))) x (at)
             WHERE g.user_id = p_user_id AND g.org_id = p_org_id) c
      JOIN usage_periods up
        ON up.user_id = p_user_id AND up.org_id = p_org_id AND up.period = c.period
       AND c.at > up.period_start AND c.at < up.period_end
     CROSS JOIN LATERAL (
            SELECT count(*) AS requests, COALESCE(sum(e.messages), 0) AS messages,
                   COALESCE(sum(e.tokens), 0) AS tokens, COALESCE(sum(e.bytes), 0) AS bytes,
                   COALESCE(sum(e.cost), 0) AS cost
              FROM usage_events e
             WHERE ((p_org_id = 0 AND e.org_id IS NULL AND e.user_id = p_user_id) OR (p_org_id > 0 AND e.org_id = p_org_id))
               AND e.created_at >= up.period_start AND e.created_at < c.at
               AND (c.kind = '' OR e.kind = c.kind)
               AND e.recorded_xid < (SELECT w.xid FROM aggregation_watermark w)
               AND NOT EXISTS (SELECT 1 FROM usage_quarantine q
                                WHERE q.event_id = e.id AND q.created_at = e.created_at)) s
    ON CONFLICT (user_id, org_id, period, kind, at) DO NOTHING;

    WITH fresh AS MATERIALIZED (
        SELECT l.*
          FROM (SELECT DISTINCT g.metric, g.period, g.kind FROM usage_grants g
                 WHERE g.user_id = p_user_id AND g.org_id = p_org_id) k
         CROSS JOIN LATERAL usage_grant_ledger(p_user_id, p_org_id, k.metric, k.period, k.kind, 'infinity', false) l
    ), gone AS (
        DELETE FROM usage_grant_draws d
         USING usage_grants g
         WHERE d.grant_id = g.id AND g.user_id = p_user_id AND g.org_id = p_org_id
           AND NOT EXISTS (SELECT 1 FROM fresh f WHERE f.grant_id = d.grant_id AND f.period_start = d.period_start)
        RETURNING 1
    ), written AS (
        INSERT INTO usage_grant_draws AS d (grant_id, period_start, period_end, drawn)
        SELECT f.grant_id, f.period_start, f.period_end, f.drawn FROM fresh f
        ON CONFLICT (grant_id, period_start) DO UPDATE
           SET drawn = EXCLUDED.drawn, period_end = EXCLUDED.period_end, recorded_at = now()
         WHERE d.drawn <> EXCLUDED.drawn OR d.period_end <> EXCLUDED.period_end
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM gone) + (SELECT count(*) FROM written) INTO v_changed;
    UPDATE usage_grants g SET settled = true
     WHERE g.user_id = p_user_id AND g.org_id = p_org_id AND NOT g.settled;
    RETURN v_changed;
END;
$$;
