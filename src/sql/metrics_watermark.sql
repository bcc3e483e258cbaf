-- The aggregation watermark's age in seconds (aggregation_watermark.updated_at) and the events
-- of usage_events at or above it, counted up to $1 (the cap: "at least this many" past it).
-- An index range scan on usage_events_recorded_xid_idx from the watermark up: cost follows
-- the backlog, not the table, and stops at the cap.
SELECT extract(epoch FROM clock_timestamp() - w.updated_at)::float8 AS age_seconds,
       (SELECT count(*) FROM (
            SELECT 1 FROM usage_events
             WHERE recorded_xid >= (SELECT xid FROM aggregation_watermark)
             LIMIT $1) backlog) AS unaggregated
  FROM aggregation_watermark w
