-- Drops public's diesel migration table once this program's version rows have left it: ours
-- alone when nothing else is left in it; an application's rows keep it. No binds.
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM public.__diesel_schema_migrations) THEN
        DROP TABLE public.__diesel_schema_migrations;
    END IF;
END $$
