-- Reconciliation, step 4: write the true totals into every period of `usage_closing` and its
-- per-kind rows, and close those with a close_reason ($1 = now), snapshotting the subject's
-- plan (the user's, or the organization's for its periods) and that plan's limits for the
-- period kind (reset_limits.sql). Rows are matched on (user_id, org_id): user id 0 is a legal
-- user. Run by key (see `by_key` in periods.rs), with an index on usage_closing_raw's period.
WITH totals AS (
    SELECT c.user_id, c.org_id, c.period, c.period_start, c.close_reason, c.plan_id, c.limits,
           COALESCE(sum(r.requests), 0) AS requests, COALESCE(sum(r.messages), 0) AS messages,
           COALESCE(sum(r.tokens), 0) AS tokens, COALESCE(sum(r.bytes), 0) AS bytes,
           COALESCE(sum(r.cost), 0) AS cost
      FROM usage_closing c
      LEFT JOIN usage_closing_raw r USING (user_id, org_id, period, period_start)
     GROUP BY c.user_id, c.org_id, c.period, c.period_start, c.close_reason, c.plan_id,
              c.limits
), stale_kinds AS (
    DELETE FROM usage_period_kind_totals k
     USING usage_closing c
     WHERE k.user_id = c.user_id AND k.org_id = c.org_id AND k.period = c.period
       AND k.period_start = c.period_start
       AND NOT EXISTS (SELECT 1 FROM usage_closing_raw r
                        WHERE r.user_id = k.user_id AND r.org_id = k.org_id AND r.period = k.period
                          AND r.period_start = k.period_start AND r.kind = k.kind)
), kinds AS (
    INSERT INTO usage_period_kind_totals AS k
           (user_id, org_id, period, period_start, kind, requests, messages, tokens, bytes, cost)
    SELECT user_id, org_id, period, period_start, kind, requests, messages, tokens, bytes, cost
      FROM usage_closing_raw
    ON CONFLICT (user_id, org_id, period, period_start, kind) DO UPDATE
       SET requests = EXCLUDED.requests, messages = EXCLUDED.messages, tokens = EXCLUDED.tokens,
           bytes = EXCLUDED.bytes, cost = EXCLUDED.cost
)
UPDATE usage_periods up
   SET requests     = t.requests,
       messages     = t.messages,
       tokens       = t.tokens,
       bytes        = t.bytes,
       cost         = t.cost,
       status       = CASE WHEN t.close_reason IS NULL THEN up.status ELSE 'closed' END,
       close_reason = COALESCE(t.close_reason, up.close_reason),
       closed_at    = CASE WHEN t.close_reason IS NULL THEN up.closed_at ELSE $1 END,
       plan_id      = CASE WHEN t.close_reason IS NULL THEN up.plan_id ELSE t.plan_id END,
       limits       = CASE WHEN t.close_reason IS NULL THEN up.limits
                           ELSE COALESCE(t.limits, '[]'::jsonb) END
  FROM totals t
 WHERE up.user_id = t.user_id AND up.org_id = t.org_id AND up.period = t.period
   AND up.period_start = t.period_start
