-- A manual reset opens a period: subject ($1 user_id, $2 org_id), kind $3, from $4 to $5.
INSERT INTO usage_periods (user_id, org_id, period, period_start, period_end)
VALUES ($1, $2, $3, $4, $5)
