-- Demo data, into plan_limits (reads plans, by name): the seeds' limits. No row = unlimited:
-- pro has no token limit, enterprise no limits at all. No binds.
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
       ) AS l (plan, metric, period, kind, max_value) ON l.plan = p.name
