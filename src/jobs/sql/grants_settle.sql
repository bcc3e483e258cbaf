-- grants_settle: records what every grant not yet settled gave (usage_grant_settle, per
-- subject), in a transaction that holds the aggregation watermark, so the marks and the draws
-- agree with the books. Returns the subjects settled and the draw rows changed.
SELECT count(*) AS subjects, COALESCE(sum(usage_grant_settle(s.user_id, s.org_id)), 0)::bigint AS changed
  FROM (SELECT DISTINCT g.user_id, g.org_id FROM usage_grants g WHERE NOT g.settled) s
