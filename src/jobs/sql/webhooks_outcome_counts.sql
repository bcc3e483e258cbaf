-- Webhook deliveries (webhook_deliveries, with their endpoint in webhook_endpoints) counted
-- by endpoint host, status and last error class (`none` for a delivered one, or one that met
-- no error), and whether the endpoint is disabled; for `--status` and `/metrics`. No binds.
SELECT e.host, d.status,
       CASE WHEN d.status = 'delivered' THEN 'none'
            ELSE COALESCE(d.error_class, 'none') END AS class,
       e.disabled_at IS NOT NULL AS endpoint_disabled, count(*) AS n
  FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
 GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3
