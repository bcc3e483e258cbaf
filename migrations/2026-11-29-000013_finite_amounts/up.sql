-- numeric accepts 'NaN' and (since PostgreSQL 14) '±Infinity', and NaN compares greater than
-- every number, so `>= 0` let both through: a NaN limit broke quota_status() readers and a NaN
-- price made usage_record() fail on the event's cost bound. Limits and prices are finite.
-- Validated: a database holding such a row stops here, naming the constraint; fix the row
-- (`UPDATE plan_limits SET max_value = … WHERE max_value = 'NaN'`) and migrate again.
ALTER TABLE plan_limits
    ADD CONSTRAINT plan_limits_max_value_finite
        CHECK (max_value NOT IN ('NaN', 'Infinity'));

ALTER TABLE prices
    ADD CONSTRAINT prices_finite
        CHECK (per_event NOT IN ('NaN', 'Infinity')
           AND per_1k_prompt_tokens NOT IN ('NaN', 'Infinity')
           AND per_1k_completion_tokens NOT IN ('NaN', 'Infinity')
           AND per_1k_tokens NOT IN ('NaN', 'Infinity')
           AND per_mb NOT IN ('NaN', 'Infinity'));
