-- Whether public holds the layout of a release that kept every object there (its
-- usage_events and diesel's migration table) while schema $1 (its name) has no usage_events
-- yet. Reads the catalog only.
SELECT to_regclass('public.usage_events') IS NOT NULL
   AND to_regclass('public.__diesel_schema_migrations') IS NOT NULL
   AND to_regclass(format('%I.usage_events', $1::text)) IS NULL AS value
