-- Demo data, into prices: the price of each kind and model the demo's events use. No binds.
INSERT INTO prices (kind, model, per_event, per_1k_prompt_tokens, per_1k_completion_tokens, per_mb)
VALUES ('ai_response', 'gpt-4o',        0, 0.0025,  0.01,   0),
       ('ai_response', 'gpt-4o-mini',   0, 0.00015, 0.0006, 0),
       ('ai_response', 'claude-sonnet', 0, 0.003,   0.015,  0),
       ('image_generation', '',         0.04, 0, 0, 0),
       ('file_upload', '',              0, 0, 0, 0.0001)
