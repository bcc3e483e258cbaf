-- The summary rows of local day $1 recomputed from raw events below the watermark $3
-- ($2 = one user id, or NULL for every user), but for the owners in rebuild_partial. The day
-- is local to the event's subject: the organization's zone for usage in one, the user's
-- otherwise. Only events within a day of $1 in UTC can fall on that local date in any zone,
-- which lets partition pruning skip other months. Personal rows and rows of one organization
-- are told apart by COALESCE(org_id, 0): organization ids are positive.
CREATE TEMP TABLE rebuild_fresh ON COMMIT DROP AS
WITH ev AS (
    SELECT e.*
      FROM usage_events e
     WHERE e.created_at >= ($1::date - 1)::timestamp AT TIME ZONE 'UTC'
       AND e.created_at <  ($1::date + 2)::timestamp AT TIME ZONE 'UTC'
       AND ($2::bigint IS NULL OR e.user_id = $2::bigint)
       AND e.recorded_xid < $3::xid8
       AND NOT EXISTS (SELECT 1 FROM rebuild_partial p
                        WHERE p.user_id = e.user_id
                          AND COALESCE(p.org_id, 0) = COALESCE(e.org_id, 0))
       -- What aggregate set aside was never counted; a rebuild does not count it either.
       AND NOT EXISTS (SELECT 1 FROM usage_quarantine q
                        WHERE q.event_id = e.id AND q.created_at = e.created_at)
), declared AS (
    SELECT s.user_id, s.org_id, COALESCE(o.timezone, u.timezone) AS timezone
      FROM (SELECT DISTINCT user_id, COALESCE(org_id, 0) AS org_id FROM ev) s
      LEFT JOIN users u ON s.org_id = 0 AND u.id = s.user_id
      LEFT JOIN organizations o ON s.org_id > 0 AND o.id = s.org_id
), zones AS (
    SELECT t.timezone, usage_timezone_or_utc(t.timezone) AS zone
      FROM (SELECT DISTINCT timezone FROM declared WHERE timezone IS NOT NULL) t
)
SELECT ev.user_id, ev.org_id, $1::date AS day, ev.kind, ev.request_type, ev.model,
       count(*)::bigint AS events, sum(ev.tokens)::bigint AS tokens,
       sum(ev.prompt_tokens)::bigint AS prompt_tokens,
       sum(ev.completion_tokens)::bigint AS completion_tokens,
       sum(ev.messages)::bigint AS messages, sum(ev.bytes)::bigint AS bytes, sum(ev.cost) AS cost
  FROM ev
  JOIN declared d ON d.user_id = ev.user_id AND d.org_id = COALESCE(ev.org_id, 0)
  LEFT JOIN zones z ON z.timezone = d.timezone
 WHERE (ev.created_at AT TIME ZONE COALESCE(z.zone, 'UTC'))::date = $1::date
 GROUP BY ev.user_id, ev.org_id, ev.kind, ev.request_type, ev.model
