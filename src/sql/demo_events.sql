-- Demo data, into usage_events (reads users, organization_members): ~30 days of activity up
-- to now, random from the seed the loader set (setseed). Each user has a level in (0, 1];
-- about level² × 10 events a day, of every kind. A member spends 70 % of their usage in one
-- of their organizations, the rest is personal. No binds.
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
 WHERE e.at <= now()
