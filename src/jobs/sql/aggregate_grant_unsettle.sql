-- aggregate_grant_unsettle: the grants of the batch's subjects (aggregate_subjects) are to be
-- settled again: what they gave may have changed with these events.
UPDATE usage_grants g
   SET settled = false
  FROM aggregate_subjects z
 WHERE g.user_id = z.user_id AND g.org_id = z.org_id AND g.settled
