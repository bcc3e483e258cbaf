-- The largest users of each (organization, metric, event kind, period start and end) in a batch of
-- organizations' alerts, at most three each, largest first: from the daily summary, whose
-- days are the organization's local days, over the local days of the period. Past members
-- keep their usage. `requests` counts events.
-- $1 organization ids (bigint[]), $2 metrics (text[]), $3 event kinds ('' = all) (text[]),
-- $4 period starts (timestamptz[]), $5 period ends (timestamptz[]): one entry per key.
SELECT k.org_id, k.metric, k.kind, k.period_start, k.period_end, t.user_id, COALESCE(u.name, '') AS name, t.used
  FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[])
       AS k (org_id, metric, kind, period_start, period_end)
  JOIN organizations o ON o.id = k.org_id
 CROSS JOIN LATERAL (SELECT usage_timezone_or_utc(o.timezone) AS zone) z
 CROSS JOIN LATERAL (
       SELECT d.user_id,
              sum(CASE k.metric WHEN 'requests' THEN d.events::numeric
                                WHEN 'messages' THEN d.messages::numeric
                                WHEN 'tokens'   THEN d.tokens::numeric
                                WHEN 'bytes'    THEN d.bytes::numeric
                                ELSE d.cost END) AS used
         FROM token_usage_daily d
        WHERE d.org_id = k.org_id
          AND d.day >= (k.period_start AT TIME ZONE z.zone)::date
          AND d.day < (k.period_end AT TIME ZONE z.zone)::date
          AND (k.kind = '' OR d.kind = k.kind)
        GROUP BY d.user_id
       HAVING sum(CASE k.metric WHEN 'requests' THEN d.events::numeric
                                WHEN 'messages' THEN d.messages::numeric
                                WHEN 'tokens'   THEN d.tokens::numeric
                                WHEN 'bytes'    THEN d.bytes::numeric
                                ELSE d.cost END) > 0
        ORDER BY 2 DESC, d.user_id
        LIMIT 3) t
  LEFT JOIN users u ON u.id = t.user_id
 ORDER BY k.org_id, k.metric, k.kind, k.period_start, k.period_end, t.used DESC, t.user_id
