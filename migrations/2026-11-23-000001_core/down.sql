DROP TABLE aggregation_watermark;
DROP TABLE job_runs;
DROP FUNCTION usage_record(bigint, text, bigint, bigint, bigint, integer, bigint, numeric, text, text, jsonb, timestamptz);
DROP TABLE prices;
DROP TABLE usage_events;
DROP TABLE users;
DROP TABLE plan_limits;
DROP TABLE plans;
