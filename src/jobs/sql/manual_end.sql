-- A manual reset ends the subject's ($1 user_id, $2 org_id) period of kind $3 starting at $5
-- at $4 (now); manual_closing.sql and the reconciliation then close it.
UPDATE usage_periods SET period_end = $4
 WHERE user_id = $1 AND org_id = $2 AND period = $3 AND period_start = $5
