-- Demo data, into usage_events: Acme's evaluation run of the last few minutes, by its admin
-- (user 2): 100,000 tokens, so its shared monthly token limit is past 80 % whatever the day
-- of the month, and the demo shows the organization's alerts. No binds.
INSERT INTO usage_events (user_id, org_id, kind, request_type, model, tokens, prompt_tokens,
                          completion_tokens, cost, created_at)
SELECT 2, 1, 'ai_response', 'prompt', 'gpt-4o', 5000, 4000, 1000, 0.02,
       now() - make_interval(secs => n * 15)
  FROM generate_series(1, 20) AS n
