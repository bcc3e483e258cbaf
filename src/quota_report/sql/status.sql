-- The rows of a quota report: usage_subject_status() of the subject ($1 user_id, $2 org_id)
-- at $3, what quota_status() and org_quota_status() return, with the offset from UTC of zone
-- $4 at each period's end, in seconds east: the reset instant as the subject's clock shows it;
-- the same at the projected exhaustion (0 without one).
SELECT q.*,
       EXTRACT(EPOCH FROM (q.period_end AT TIME ZONE $4) - (q.period_end AT TIME ZONE 'UTC'))::int
           AS period_end_utc_offset,
       COALESCE(EXTRACT(EPOCH FROM (q.projected_exhaustion AT TIME ZONE $4)
                                   - (q.projected_exhaustion AT TIME ZONE 'UTC'))::int, 0)
           AS projected_utc_offset
  FROM usage_subject_status($1, $2, $3) q
