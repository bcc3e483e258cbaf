DROP TABLE webhook_deliveries;
DROP TABLE webhook_endpoints;
ALTER TABLE plans DROP COLUMN alert_thresholds;
