-- aggregate_grant_marks: adds the batch (aggregate_batch, its uncountable events already set
-- aside) into the marks of the instants that cut periods at a grant's start, expiry or void
-- (usage_grant_marks: counted usage of [since, at) of the subject, of one kind or all), in
-- the aggregate transaction, so they move with the watermark. Marks are few: the batch is
-- joined to them on the subject.
UPDATE usage_grant_marks m
   SET requests = m.requests + d.requests, messages = m.messages + d.messages,
       tokens = m.tokens + d.tokens, bytes = m.bytes + d.bytes, cost = m.cost + d.cost
  FROM (SELECT k.user_id, k.org_id, k.period, k.kind, k.at, count(*) AS requests,
               sum(b.messages) AS messages, sum(b.tokens) AS tokens, sum(b.bytes) AS bytes,
               sum(b.cost) AS cost
          FROM usage_grant_marks k
          JOIN aggregate_batch b
            ON b.subject_user_id = k.user_id AND b.subject_org_id = k.org_id
           AND b.created_at >= k.since AND b.created_at < k.at
           AND (k.kind = '' OR b.kind = k.kind)
         GROUP BY k.user_id, k.org_id, k.period, k.kind, k.at) d
 WHERE m.user_id = d.user_id AND m.org_id = d.org_id AND m.period = d.period
   AND m.kind = d.kind AND m.at = d.at
