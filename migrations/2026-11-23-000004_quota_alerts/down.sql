DROP TABLE quota_alerts;
