-- Where a bounded transaction stops: `first` is the lowest transaction id with new events in
-- [$1, $2), `cut` the transaction id of the event after the first $3 of them in xid order
-- (NULL when there are no more than $3). Both read the recorded_xid index of each partition.
SELECT (SELECT e.recorded_xid::text FROM usage_events e
         WHERE e.recorded_xid >= $1::xid8 AND e.recorded_xid < $2::xid8
         ORDER BY e.recorded_xid LIMIT 1) AS first,
       (SELECT e.recorded_xid::text FROM usage_events e
         WHERE e.recorded_xid >= $1::xid8 AND e.recorded_xid < $2::xid8
         ORDER BY e.recorded_xid OFFSET $3 LIMIT 1) AS cut
