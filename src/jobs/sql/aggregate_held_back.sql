-- What holds the watermark back, if anything: the transaction whose id is the horizon of a
-- fresh snapshot (pg_snapshot_xmin: the oldest transaction still open in the cluster, which no
-- aggregation may pass), when committed events wait at or above it. Found through pg_locks
-- (every open transaction holds the lock of its own id), which any role may read; its
-- session's details come from pg_stat_activity, whose state and start time PostgreSQL shows
-- only to the session's own user or a member of pg_read_all_stats (NULL otherwise). A
-- prepared transaction has no session: it is named by its gid. No row when nothing waits.
WITH horizon AS MATERIALIZED (
    SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xid
), waiting AS MATERIALIZED (
    SELECT h.xid FROM horizon h
     WHERE EXISTS (SELECT 1 FROM usage_events e WHERE e.recorded_xid >= h.xid)
)
SELECT l.pid, COALESCE(a.application_name, '') AS application_name,
       COALESCE(a.usename::text, '') AS user_name, a.state,
       EXTRACT(EPOCH FROM clock_timestamp() - a.xact_start)::float8 AS open_seconds,
       w.xid::text AS xid
  FROM waiting w
  JOIN pg_locks l ON l.locktype = 'transactionid' AND l.mode = 'ExclusiveLock' AND l.granted
                 AND l.transactionid::text = (w.xid::text::numeric % 4294967296)::text
  LEFT JOIN pg_stat_activity a ON a.pid = l.pid
UNION ALL
SELECT NULL::int, 'prepared transaction ' || p.gid, p.owner::text, 'prepared',
       EXTRACT(EPOCH FROM clock_timestamp() - p.prepared)::float8, w.xid::text
  FROM waiting w
  JOIN pg_prepared_xacts p ON p.transaction::text = (w.xid::text::numeric % 4294967296)::text
 LIMIT 1
