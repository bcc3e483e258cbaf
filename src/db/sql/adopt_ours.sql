-- Whether public's diesel migration table lists version $1 (this program's first migration):
-- then the objects in public are this program's.
SELECT EXISTS (SELECT 1 FROM public.__diesel_schema_migrations WHERE version = $1)
    AS value
