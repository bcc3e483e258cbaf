-- reset_grant_unsettle: the grants of the subjects whose periods this batch closes
-- (usage_closing) are to be settled again by the next aggregate run: a closed period keeps the
-- limits of its plan then (what its usage past them drew), and reconciliation may have
-- corrected its totals.
UPDATE usage_grants g
   SET settled = false
  FROM (SELECT DISTINCT c.user_id, c.org_id FROM usage_closing c) s
 WHERE g.user_id = s.user_id AND g.org_id = s.org_id AND g.settled
