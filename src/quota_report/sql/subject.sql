-- The heading of a quota report: the subject's ($1 user_id, $2 org_id) name (an
-- organization's; empty for a user: the table does not show users' names), zone as stored,
-- zone counted in (usage_timezone_or_utc), that zone's offset from UTC at $3 in seconds east,
-- plan name, and a user's alert emails as they are in effect ('none' while alerts_enabled is
-- false; NULL for an organization, whose recipients' own preferences apply). No row when the
-- subject is not in usage_subjects.
SELECT CASE WHEN s.org_id > 0 THEN s.name ELSE '' END AS name, s.timezone, z.zone,
       CASE WHEN s.org_id > 0 THEN NULL WHEN NOT s.alerts_enabled THEN 'none'
            ELSE s.alert_emails END AS alert_emails,
       EXTRACT(EPOCH FROM ($3::timestamptz AT TIME ZONE z.zone)
                          - ($3::timestamptz AT TIME ZONE 'UTC'))::int AS at_utc_offset,
       p.name AS plan
  FROM usage_subjects s
 CROSS JOIN LATERAL (SELECT usage_timezone_or_utc(s.timezone) AS zone) z
  LEFT JOIN plans p ON p.id = s.plan_id
 WHERE s.user_id = $1 AND s.org_id = $2
