ALTER TABLE prices DROP CONSTRAINT prices_finite;
ALTER TABLE plan_limits DROP CONSTRAINT plan_limits_max_value_finite;
