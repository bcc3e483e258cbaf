-- usage_grant_settle(): brings the recorded drawdown of every subject with a grant not yet
-- settled (usage_grants.settled = false: new, voided, or its subject's books moved) up to
-- date with the books, set-based, in the transaction of the aggregate job (which holds the
-- watermark):
-- 1. the marks of the instants that cut its periods (usage_grant_marks: the counted usage of
--    the period before each grant's start, expiry or void inside a period that exists):
--    stale ones (a period a manual reset moved, an instant no grant has any more) deleted,
--    missing ones made from the raw events below the watermark, not set aside;
-- 2. usage_grant_draws, each grant's consumption per period, by usage_grant_allocate() (the
--    rule usage_grant_ledger() applies) over the counted events alone, gathered for every
--    key at once: inserted, updated where it changed, deleted where it no longer holds;
-- 3. the grants it read marked settled, unless another transaction changed one meanwhile
--    (a void, committed while this ran): that one is settled by the next call.
-- Returns how many draw rows changed.
CREATE OR REPLACE FUNCTION usage_grant_settle()
RETURNS bigint
LANGUAGE plpgsql
-- Planned afresh each call: a plan cached for a few subjects is slow for a thousand (a generic
-- plan after five calls in one session made it four times slower).
SET plan_cache_mode TO 'force_custom_plan'
AS $$
DECLARE
    v_changed bigint;
    v_users   bigint[];
    v_orgs    bigint[];
    v_ids     bigint[];
    v_rows    text[];
BEGIN
    -- The flagged grants as they are now (id and row version), and their subjects.
    SELECT array_agg(g.id), array_agg(g.xmin::text) INTO v_ids, v_rows
      FROM usage_grants g WHERE NOT g.settled;
    IF v_ids IS NULL THEN
        RETURN 0;
    END IF;
    SELECT array_agg(s.user_id), array_agg(s.org_id) INTO v_users, v_orgs
      FROM (SELECT DISTINCT g.user_id, g.org_id FROM usage_grants g WHERE g.id = ANY (v_ids)) s;

    DELETE FROM usage_grant_marks m
     USING unnest(v_users, v_orgs) AS s (user_id, org_id)
     WHERE m.user_id = s.user_id AND m.org_id = s.org_id
       AND (NOT EXISTS (SELECT 1 FROM usage_periods up
                         WHERE up.user_id = m.user_id AND up.org_id = m.org_id AND up.period = m.period
                           AND up.period_start = m.since AND up.period_end > m.at)
            OR NOT EXISTS (SELECT 1 FROM usage_grants g
                            WHERE g.user_id = m.user_id AND g.org_id = m.org_id AND g.period = m.period
                              AND g.kind = m.kind
                              AND m.at IN (g.starts_at, LEAST(g.expires_at, COALESCE(g.voided_at, 'infinity')))));
    -- The missing marks first (a CTE the planner keeps apart), so that only they read events.
    WITH missing AS MATERIALIZED (
        SELECT c.*, up.period_start
          FROM (SELECT DISTINCT g.user_id, g.org_id, g.period, g.kind, b.at
                  FROM unnest(v_users, v_orgs) AS s (user_id, org_id)
                  JOIN usage_grants g ON g.user_id = s.user_id AND g.org_id = s.org_id
                 CROSS JOIN LATERAL (VALUES (g.starts_at), (LEAST(g.expires_at, COALESCE(g.voided_at, 'infinity')))) b (at)) c
          JOIN usage_periods up
            ON up.user_id = c.user_id AND up.org_id = c.org_id AND up.period = c.period
           AND c.at > up.period_start AND c.at < up.period_end
         WHERE NOT EXISTS (SELECT 1 FROM usage_grant_marks m
                            WHERE m.user_id = c.user_id AND m.org_id = c.org_id AND m.period = c.period
                              AND m.kind = c.kind AND m.at = c.at)
    )
    INSERT INTO usage_grant_marks (user_id, org_id, period, kind, at, since, requests, messages, tokens, bytes, cost)
    SELECT c.user_id, c.org_id, c.period, c.kind, c.at, c.period_start, x.requests, x.messages, x.tokens, x.bytes, x.cost
      FROM missing c
     CROSS JOIN LATERAL (
            SELECT count(*) AS requests, COALESCE(sum(e.messages), 0) AS messages,
                   COALESCE(sum(e.tokens), 0) AS tokens, COALESCE(sum(e.bytes), 0) AS bytes,
                   COALESCE(sum(e.cost), 0) AS cost
              FROM usage_events e
             WHERE ((c.org_id = 0 AND e.org_id IS NULL AND e.user_id = c.user_id) OR (c.org_id > 0 AND e.org_id = c.org_id))
               AND e.created_at >= c.period_start AND e.created_at < c.at
               AND (c.kind = '' OR e.kind = c.kind)
               AND e.recorded_xid < (SELECT w.xid FROM aggregation_watermark w)
               AND NOT EXISTS (SELECT 1 FROM usage_quarantine q
                                WHERE q.event_id = e.id AND q.created_at = e.created_at)) x;

    -- The drawdown of every key of those subjects, gathered set-based for
    -- usage_grant_allocate() (what usage_grant_ledger() gathers for one key, counted only;
    -- every cut has its mark now).
    WITH keys AS MATERIALIZED (
        SELECT g.user_id, g.org_id, g.metric, g.period, g.kind,
               array_agg(g.id ORDER BY g.expires_at, g.id) AS ids,
               array_agg(g.starts_at ORDER BY g.expires_at, g.id) AS froms,
               array_agg(LEAST(g.expires_at, COALESCE(g.voided_at, 'infinity')) ORDER BY g.expires_at, g.id) AS tos,
               array_agg(g.amount ORDER BY g.expires_at, g.id) AS amounts,
               min(g.starts_at) AS first,
               max(LEAST(g.expires_at, COALESCE(g.voided_at, 'infinity'))) AS last
          FROM unnest(v_users, v_orgs) AS s (user_id, org_id)
          JOIN usage_grants g ON g.user_id = s.user_id AND g.org_id = s.org_id
         WHERE g.starts_at < LEAST(g.expires_at, COALESCE(g.voided_at, 'infinity'))
         GROUP BY g.user_id, g.org_id, g.metric, g.period, g.kind
    ), fresh AS MATERIALIZED (
        SELECT a.*
          FROM keys k
          JOIN usage_subjects su ON su.user_id = k.user_id AND su.org_id = k.org_id
          LEFT JOIN plan_limits l ON l.plan_id = su.plan_id AND l.period = k.period
                                 AND l.kind = k.kind AND l.metric = k.metric
         CROSS JOIN LATERAL (
                SELECT array_agg(up.period_start ORDER BY up.period_start) AS starts,
                       array_agg(up.period_end ORDER BY up.period_start) AS ends,
                       array_agg(CASE WHEN k.kind = '' THEN
                                          CASE k.metric WHEN 'requests' THEN up.requests::numeric WHEN 'messages' THEN up.messages::numeric
                                                        WHEN 'tokens' THEN up.tokens::numeric WHEN 'bytes' THEN up.bytes::numeric
                                                        ELSE up.cost END
                                      ELSE COALESCE(CASE k.metric WHEN 'requests' THEN t.requests::numeric WHEN 'messages' THEN t.messages::numeric
                                                                  WHEN 'tokens' THEN t.tokens::numeric WHEN 'bytes' THEN t.bytes::numeric
                                                                  ELSE t.cost END, 0) END
                                 ORDER BY up.period_start) AS used,
                       array_agg(CASE WHEN up.limits IS NULL THEN l.max_value
                                      ELSE (SELECT (j ->> 'max_value')::numeric FROM jsonb_array_elements(up.limits) j
                                             WHERE j ->> 'metric' = k.metric AND j ->> 'kind' = k.kind LIMIT 1) END
                                 ORDER BY up.period_start) AS limits
                  FROM usage_periods up
                  LEFT JOIN usage_period_kind_totals t
                    ON k.kind <> '' AND t.user_id = up.user_id AND t.org_id = up.org_id
                   AND t.period = up.period AND t.period_start = up.period_start AND t.kind = k.kind
                 WHERE up.user_id = k.user_id AND up.org_id = k.org_id AND up.period = k.period
                   AND up.period_end > k.first AND up.period_start < k.last) p
         CROSS JOIN LATERAL (
                SELECT array_agg(m.since) AS since, array_agg(m.at) AS at,
                       array_agg(CASE k.metric WHEN 'requests' THEN m.requests::numeric WHEN 'messages' THEN m.messages::numeric
                                               WHEN 'tokens' THEN m.tokens::numeric WHEN 'bytes' THEN m.bytes::numeric
                                               ELSE m.cost END) AS used
                  FROM usage_grant_marks m
                 WHERE m.user_id = k.user_id AND m.org_id = k.org_id AND m.period = k.period
                   AND m.kind = k.kind) c
         CROSS JOIN LATERAL usage_grant_allocate(k.ids, k.froms, k.tos, k.amounts, p.starts, p.ends,
                                                 p.used, p.limits, c.since, c.at, c.used) a
    ), gone AS (
        DELETE FROM usage_grant_draws d
         USING usage_grants g, unnest(v_users, v_orgs) AS s (user_id, org_id)
         WHERE d.grant_id = g.id AND g.user_id = s.user_id AND g.org_id = s.org_id
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
    -- Settled: the grants flagged at the start and not changed since. One made or voided by
    -- another transaction meanwhile stays flagged, for the next call.
    UPDATE usage_grants g SET settled = true
      FROM unnest(v_ids, v_rows) AS s (id, row_version)
     WHERE g.id = s.id AND g.xmin::text = s.row_version AND NOT g.settled;
    RETURN v_changed;
END;
$$;
