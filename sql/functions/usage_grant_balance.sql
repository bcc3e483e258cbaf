-- usage_grant_balance(user_id, org_id, metric, period, kind, at): the subject's grants of one
-- metric, period kind and event kind that are active at `at` (started, not expired, not
-- voided): `granted`, their amounts' total, and `balance`, what they have left after every
-- event the caller's snapshot sees (usage_grant_ledger, live), whenever it happened: at a
-- future `at` the balance carried over to then, and for an event recorded late (a past
-- `at`) never what later usage has drawn already. 0 and 0 when there is none.
CREATE OR REPLACE FUNCTION usage_grant_balance(p_user_id bigint, p_org_id bigint, p_metric text, p_period text, p_kind text, p_at timestamptz)
RETURNS TABLE(granted numeric, balance numeric)
LANGUAGE sql
STABLE
AS $$
    WITH ledger AS MATERIALIZED (
        SELECT l.grant_id, sum(l.drawn) AS drawn
          FROM usage_grant_ledger(p_user_id, p_org_id, p_metric, p_period, p_kind, 'infinity', true) l
         GROUP BY l.grant_id
    )
    SELECT COALESCE(sum(g.amount), 0), COALESCE(sum(g.amount - COALESCE(l.drawn, 0)), 0)
      FROM usage_grants g
      LEFT JOIN ledger l ON l.grant_id = g.id
     WHERE g.user_id = p_user_id AND g.org_id = p_org_id AND g.metric = p_metric
       AND g.period = p_period AND g.kind = p_kind
       AND g.starts_at <= p_at AND p_at < LEAST(g.expires_at, COALESCE(g.voided_at, 'infinity'))
$$;
