-- The events set aside by this transaction (aggregate_set_aside) into usage_quarantine. An
-- event passed again after usage_rebase_watermark keeps its first record.
INSERT INTO usage_quarantine (event_id, created_at, user_id, org_id, recorded_xid, reason, detail)
SELECT event_id, created_at, user_id, org_id, recorded_xid, reason, detail
  FROM aggregate_set_aside
ON CONFLICT (event_id, created_at) DO NOTHING
