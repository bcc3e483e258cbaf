-- Demo data, into users (reads plans, by name): 1,000 users across zones with and without
-- DST, including +05:30 and +10:30/+11 (Lord Howe). No binds.
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
  FROM generate_series(1, 1000) AS g
