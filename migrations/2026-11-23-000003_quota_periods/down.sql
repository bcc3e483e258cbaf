DROP FUNCTION quota_status(bigint, timestamptz);
DROP FUNCTION usage_periods_add_batch();
DROP TABLE usage_period_kind_totals;
DROP TABLE usage_periods;
DROP FUNCTION usage_period_bounds(text, int, text, timestamptz);
DROP FUNCTION usage_period_dates(date, int, text);
DROP FUNCTION usage_anchor_date(date, int);
DROP FUNCTION usage_local_midnight(date, text);
DROP FUNCTION usage_timezone_is_valid(text);
