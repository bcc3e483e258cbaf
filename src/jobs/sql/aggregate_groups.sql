-- aggregate_groups: the batch grouped as token_usage_daily is keyed (user, organization,
-- local day, kind, request_type, model), with the subject of each group
-- (usage_event_subject). The day is local to the subject: the organization's zone for usage
-- in one, the user's own otherwise (aggregate_subjects). Sums in numeric (messages in
-- bigint: no transaction holds 2^32 events), so that no sum can fail here; the overflow
-- checks read it before aggregate_daily.sql adds it. first_at/last_at bound the events of
-- each group in time. Grouped by the summary's key alone, in its order (the subject follows
-- from it): the groups come out sorted as the summary's primary key takes them.
CREATE TEMP TABLE aggregate_groups ON COMMIT DROP AS
SELECT g.*, s.user_id AS subject_user_id, s.org_id AS subject_org_id
  FROM (SELECT b.user_id, b.org_id,
               (b.created_at AT TIME ZONE z.zone)::date AS day,
               b.kind, b.request_type, b.model,
               count(*) AS events,
               sum(b.tokens) AS tokens, sum(b.prompt_tokens) AS prompt_tokens,
               sum(b.completion_tokens) AS completion_tokens, sum(b.messages) AS messages,
               sum(b.bytes) AS bytes, sum(b.cost) AS cost,
               min(b.created_at) AS first_at, max(b.created_at) AS last_at
          FROM aggregate_batch b
          JOIN aggregate_subjects z
            ON z.user_id = b.subject_user_id AND z.org_id = b.subject_org_id
         GROUP BY 1, 2, 3, 4, 5, 6) g
 CROSS JOIN LATERAL usage_event_subject(g.user_id, g.org_id) s
