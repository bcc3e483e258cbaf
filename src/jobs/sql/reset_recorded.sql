-- Reconciliation, before step 3: the recorded totals of every period in `usage_closing`, of
-- the period (kind = '') and per event kind, for the drift comparison. Run by key (see
-- `by_key` in periods.rs): each period of the batch is one probe of each primary key.
CREATE TEMP TABLE usage_closing_recorded ON COMMIT DROP AS
SELECT up.user_id, up.org_id, up.period_start, ''::text AS kind,
       up.requests, up.messages, up.tokens, up.bytes, up.cost
  FROM usage_closing c
  JOIN usage_periods up USING (user_id, org_id, period, period_start)
UNION ALL
SELECT k.user_id, k.org_id, k.period_start, k.kind, k.requests, k.messages, k.tokens,
       k.bytes, k.cost
  FROM usage_closing c
  JOIN usage_period_kind_totals k USING (user_id, org_id, period, period_start)
