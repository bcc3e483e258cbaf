-- Demo data set for `usage-worker --demo`: deterministic in shape (the same plans, users,
-- organizations and activity levels every time), with ~30 days of events ending now.
SELECT setseed(0.42);

-- free..enterprise for users; team and business for organizations.
INSERT INTO plans (name) VALUES ('free'), ('basic'), ('pro'), ('enterprise'), ('team'), ('business');

-- The seeds' limits. No row = unlimited: pro has no token limit, enterprise no limits at all.
INSERT INTO plan_limits (plan_id, metric, period, kind, max_value)
SELECT p.id, l.metric, l.period, l.kind, l.max_value
  FROM plans p
  JOIN (VALUES
        ('free',  'messages', 'month', '',                 100),
        ('free',  'tokens',   'month', '',                 100000),
        ('free',  'requests', 'day',   'image_generation', 20),
        ('free',  'bytes',    'month', 'file_upload',      104857600),
        ('basic', 'messages', 'month', '',                 2000),
        ('basic', 'tokens',   'month', '',                 500000),
        ('basic', 'requests', 'day',   'image_generation', 100),
        ('basic', 'bytes',    'month', 'file_upload',      1073741824),
        ('pro',   'messages', 'month', '',                 20000),
        ('pro',   'requests', 'day',   'image_generation', 500),
        ('pro',   'cost',     'month', '',                 500),
        -- Shared by all members of an organization on the plan. team's token limit is tight:
        -- Acme Robotics passes 80 % of it (see its evaluation run below).
        ('team',     'tokens',   'month', '',                 120000),
        ('team',     'messages', 'month', '',                 5000),
        ('team',     'requests', 'day',   'image_generation', 50),
        ('business', 'tokens',   'month', '',                 5000000),
        ('business', 'messages', 'month', '',                 50000),
        ('business', 'cost',     'month', '',                 2000)
       ) AS l (plan, metric, period, kind, max_value) ON l.plan = p.name;

INSERT INTO prices (kind, model, per_event, per_1k_prompt_tokens, per_1k_completion_tokens, per_mb)
VALUES ('ai_response', 'gpt-4o',        0, 0.0025,  0.01,   0),
       ('ai_response', 'gpt-4o-mini',   0, 0.00015, 0.0006, 0),
       ('ai_response', 'claude-sonnet', 0, 0.003,   0.015,  0),
       ('image_generation', '',         0.04, 0, 0, 0),
       ('file_upload', '',              0, 0, 0, 0.0001);

-- 1,000 users across zones with and without DST, including +05:30 and +10:30/+11 (Lord Howe).
INSERT INTO users (id, email, name, timezone, plan_id, billing_anchor_day, alerts_enabled)
SELECT g,
       'user' || g || '@example.com',
       'Demo User ' || g,
       (ARRAY['UTC', 'Europe/Berlin', 'America/New_York', 'Asia/Kolkata', 'Australia/Sydney',
              'America/Los_Angeles', 'Asia/Tokyo', 'Europe/London', 'Australia/Lord_Howe',
              'America/Sao_Paulo'])[1 + g % 10],
       (SELECT id FROM plans WHERE name = CASE
            WHEN g % 20 < 12 THEN 'free'
            WHEN g % 20 < 17 THEN 'basic'
            WHEN g % 20 < 19 THEN 'pro'
            ELSE 'enterprise' END),
       CASE WHEN g % 7 = 0 THEN 15 WHEN g % 11 = 0 THEN 31 END,
       g % 13 <> 0
  FROM generate_series(1, 1000) AS g;

-- Three organizations in three zones: Acme on a calendar month, Globex on months from the
-- 15th, Initech without limits (enterprise). Their members live in the users' ten zones.
INSERT INTO organizations (id, name, timezone, plan_id, billing_anchor_day)
SELECT o.id, o.name, o.timezone, (SELECT id FROM plans WHERE name = o.plan), o.anchor
  FROM (VALUES (1, 'Acme Robotics',  'Europe/Berlin',    'team',       NULL::smallint),
               (2, 'Globex Studios', 'America/New_York', 'business',   15),
               (3, 'Initech Labs',   'Asia/Kolkata',     'enterprise', NULL)
       ) AS o (id, name, timezone, plan, anchor);

-- The first member of each is its owner (it receives the organization's alerts, as its
-- admins do); user 2 is an admin of Acme and a member of Globex.
INSERT INTO organization_members (org_id, user_id, role)
SELECT m.org_id, g,
       CASE WHEN g = m.first_user THEN 'owner' WHEN g <= m.first_user + m.admins THEN 'admin'
            ELSE 'member' END
  FROM (VALUES (1, 1, 12, 1), (2, 13, 40, 2), (3, 41, 60, 1)) AS m (org_id, first_user, last_user, admins)
 CROSS JOIN LATERAL generate_series(m.first_user, m.last_user) AS g;
INSERT INTO organization_members (org_id, user_id, role) VALUES (2, 2, 'member');

-- Activity: each user has a level in (0, 1]; about level² × 10 events a day, of every kind.
-- A member spends 70 % of their usage in one of their organizations, the rest is personal.
INSERT INTO usage_events (user_id, org_id, kind, request_type, model, tokens, prompt_tokens,
                          completion_tokens, messages, bytes, cost, created_at)
SELECT e.user_id,
       CASE WHEN e.r4 < 0.7 THEN e.orgs[1 + floor(e.r4 / 0.7 * cardinality(e.orgs))::int] END,
       e.kind,
       CASE e.kind WHEN 'ai_response' THEN (ARRAY['chat', 'plagiarism', 'prompt'])[1 + (e.r2 * 3)::int % 3]
                   WHEN 'message_sent' THEN 'chat' ELSE '' END,
       CASE e.kind WHEN 'ai_response' THEN (ARRAY['gpt-4o', 'gpt-4o-mini', 'claude-sonnet'])[1 + (e.r3 * 3)::int % 3]
                   WHEN 'image_generation' THEN 'dall-e-3' ELSE '' END,
       e.prompt + e.completion,
       e.prompt,
       e.completion,
       CASE e.kind WHEN 'message_sent' THEN 1 ELSE 0 END,
       e.bytes,
       CASE e.kind
            WHEN 'ai_response' THEN round((e.prompt * 0.0025 + e.completion * 0.01) / 1000, 8)
            WHEN 'image_generation' THEN 0.04
            WHEN 'file_upload' THEN round(e.bytes * 0.0001 / 1048576, 8)
            ELSE 0 END,
       e.at
  FROM (SELECT a.user_id,
               a.at,
               CASE WHEN a.r1 < 0.45 THEN 'message_sent'
                    WHEN a.r1 < 0.85 THEN 'ai_response'
                    WHEN a.r1 < 0.96 THEN 'file_upload'
                    ELSE 'image_generation' END AS kind,
               a.r2, a.r3, a.r4, a.orgs,
               CASE WHEN a.r1 >= 0.45 AND a.r1 < 0.85 THEN (100 + a.r2 * 1400)::bigint ELSE 0 END AS prompt,
               CASE WHEN a.r1 >= 0.45 AND a.r1 < 0.85 THEN (100 + a.r3 * 1600)::bigint ELSE 0 END AS completion,
               CASE WHEN a.r1 >= 0.85 AND a.r1 < 0.96 THEN (10240 + a.r2 * 5000000)::bigint ELSE 0 END AS bytes
          FROM (SELECT u.id AS user_id,
                       date_trunc('day', now()) - make_interval(days => d.d)
                           + make_interval(secs => random() * 86399) AS at,
                       random() AS r1, random() AS r2, random() AS r3, random() AS r4,
                       o.orgs
                  FROM users u
                  LEFT JOIN LATERAL (SELECT array_agg(m.org_id ORDER BY m.org_id) AS orgs
                                       FROM organization_members m WHERE m.user_id = u.id) AS o ON true
                 CROSS JOIN generate_series(0, 29) AS d (d)
                 CROSS JOIN LATERAL generate_series(1, floor(power((1 + (u.id * 7919) % 97) / 97.0, 2) * 10)::int) AS n
               ) AS a
       ) AS e
 WHERE e.at <= now();

-- Acme's evaluation run of the last few minutes, by its admin: 100,000 tokens, so its shared
-- monthly token limit is past 80 % whatever the day of the month, and the demo shows the
-- organization's alerts.
INSERT INTO usage_events (user_id, org_id, kind, request_type, model, tokens, prompt_tokens,
                          completion_tokens, cost, created_at)
SELECT 2, 1, 'ai_response', 'prompt', 'gpt-4o', 5000, 4000, 1000, 0.02,
       now() - make_interval(secs => n * 15)
  FROM generate_series(1, 20) AS n;
