-- usage_subjects: every subject, with what its books are kept by. A subject is whose quota
-- usage counts against: a user's personal usage, keyed (user_id = the user, org_id = 0), or
-- an organization's shared usage, keyed (user_id = 0, org_id = the organization). Periods,
-- per-kind totals and alerts are keyed the same way; usage_event_subject() maps an event to
-- its subject.
--
-- timezone is as declared (usage_timezone_or_utc() gives the zone actually used), anchor the
-- billing anchor day (NULL: calendar months), email NULL for an organization (its alerts go
-- to its owners and admins), alert_emails the user's email preference ('all' for an
-- organization: its recipients' own preferences apply). security_invoker: a reader sees what the policies let it see of
-- users and organizations, here as anywhere.
CREATE OR REPLACE VIEW usage_subjects WITH (security_invoker = true) AS
SELECT u.id AS user_id, 0::bigint AS org_id, u.name, u.email, u.timezone,
       u.billing_anchor_day, u.plan_id, u.alerts_enabled, u.alert_emails
  FROM users u
UNION ALL
SELECT 0::bigint, o.id, o.name, NULL::text, o.timezone, o.billing_anchor_day, o.plan_id,
       o.alerts_enabled, 'all'::text
  FROM organizations o;
