-- usage_partition_policies(table): gives a partition of usage_events the parent's two
-- row-level security policies. PostgreSQL applies the parent's policies only to queries
-- through the parent: a role granted SELECT on a partition itself would read it unfiltered.
-- Runs as the tables' owner, inside usage_create_partition.
CREATE OR REPLACE FUNCTION usage_partition_policies(p_table regclass)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', p_table);
    EXECUTE format('CREATE POLICY usage_not_reader ON %s
                        USING (NOT (SELECT usage_is_reader()))
                        WITH CHECK (NOT (SELECT usage_is_reader()))', p_table);
    EXECUTE format('CREATE POLICY usage_reader_own_org ON %s FOR SELECT
                        USING (org_id > 0 AND org_id = (SELECT usage_current_org()))', p_table);
END;
$$;
