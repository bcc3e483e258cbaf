-- usage_periods_delete_kind_totals(): statement-level AFTER DELETE trigger of usage_periods:
-- the per-kind rows of deleted periods go with them (there is no foreign key: its per-row
-- check cost more than writing the rows). The table is named through the trigger's own
-- schema, so no temporary table can stand in for it.
CREATE OR REPLACE FUNCTION usage_periods_delete_kind_totals()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    EXECUTE format(
        'DELETE FROM %I.usage_period_kind_totals k
          USING deleted_periods d
          WHERE k.user_id = d.user_id AND k.org_id = d.org_id AND k.period = d.period
            AND k.period_start = d.period_start', TG_TABLE_SCHEMA);
    RETURN NULL;
END;
$$;
