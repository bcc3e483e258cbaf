-- Demo data, into organization_members: users 1 to 60 in the three organizations. The first
-- member of each is its owner (it receives the organization's alerts, as its admins do);
-- user 2 is an admin of Acme (and, inserted after this, a member of Globex). No binds.
INSERT INTO organization_members (org_id, user_id, role)
SELECT m.org_id, g,
       CASE WHEN g = m.first_user THEN 'owner' WHEN g <= m.first_user + m.admins THEN 'admin'
            ELSE 'member' END
  FROM (VALUES (1, 1, 12, 1), (2, 13, 40, 2), (3, 41, 60, 1)) AS m (org_id, first_user, last_user, admins)
 CROSS JOIN LATERAL generate_series(m.first_user, m.last_user) AS g
