DROP FUNCTION usage_summary(bigint, text, date, date);
DROP FUNCTION usage_timezone_or_utc(text);
DROP TABLE token_usage_daily;
