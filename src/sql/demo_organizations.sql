-- Demo data, into organizations (reads plans, by name): three organizations in three zones:
-- Acme on a calendar month, Globex on months from the 15th, Initech without limits
-- (enterprise). Their members live in the users' ten zones. No binds.
INSERT INTO organizations (id, name, timezone, plan_id, billing_anchor_day)
SELECT o.id, o.name, o.timezone, (SELECT id FROM plans WHERE name = o.plan), o.anchor
  FROM (VALUES (1, 'Acme Robotics',  'Europe/Berlin',    'team',       NULL::smallint),
               (2, 'Globex Studios', 'America/New_York', 'business',   15),
               (3, 'Initech Labs',   'Asia/Kolkata',     'enterprise', NULL)
       ) AS o (id, name, timezone, plan, anchor)
