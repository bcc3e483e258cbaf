-- Writes the worker's settings usage_record() reads into usage_settings' single row: $1 =
-- ingest.idempotency_days. Inserts the row when missing; an unchanged value is not rewritten
-- (no row affected), so starting leaves the row alone.
INSERT INTO usage_settings (singleton, idempotency_days) VALUES (true, $1)
ON CONFLICT (singleton) DO UPDATE
   SET idempotency_days = EXCLUDED.idempotency_days, updated_at = now()
 WHERE usage_settings.idempotency_days IS DISTINCT FROM EXCLUDED.idempotency_days
