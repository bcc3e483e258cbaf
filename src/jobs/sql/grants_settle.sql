-- grants_settle: records what every grant not yet settled gave (usage_grant_settle(), set-based
-- over their subjects), in a transaction that holds the aggregation watermark, so the marks and
-- the draws agree with the books. Returns the subjects settled and the draw rows changed.
SELECT (SELECT count(*) FROM (SELECT DISTINCT g.user_id, g.org_id FROM usage_grants g
                               WHERE NOT g.settled) s) AS subjects,
       usage_grant_settle() AS changed
