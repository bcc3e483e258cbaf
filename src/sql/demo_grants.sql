-- Demo data, credit grants (usage_grant(), reads users and organizations): user 42 bought
-- 500,000 tokens valid 90 days, 20 days ago; every 50th user on the free plan got 50 more
-- messages a month for 30 days from support; user 3 got 10 more image generations a day for
-- a week; Acme Robotics topped its shared token limit up by 100,000 for 60 days. No binds.
SELECT count(*) AS n FROM (
    SELECT usage_grant(p_user_id => 42, p_metric => 'tokens', p_amount => 500000,
                       p_starts_at => now() - interval '20 days',
                       p_expires_at => now() + interval '70 days',
                       p_reason => 'order 1042: 500,000 tokens valid 90 days')
    UNION ALL
    SELECT usage_grant(p_user_id => u.id, p_metric => 'messages', p_amount => 50,
                       p_starts_at => now() - interval '3 days',
                       p_expires_at => now() + interval '27 days',
                       p_reason => 'support: goodwill credit')
      FROM users u JOIN plans p ON p.id = u.plan_id
     WHERE p.name = 'free' AND u.id % 50 = 0
    UNION ALL
    SELECT usage_grant(p_user_id => 3, p_metric => 'requests', p_kind => 'image_generation',
                       p_period => 'day', p_amount => 10,
                       p_expires_at => now() + interval '7 days', p_reason => 'launch week')
    UNION ALL
    SELECT usage_grant(p_org_id => 1, p_metric => 'tokens', p_amount => 100000,
                       p_starts_at => now() - interval '10 days',
                       p_expires_at => now() + interval '50 days',
                       p_reason => 'top-up: 100,000 tokens for 60 days')
) g
