-- The members of organization $1 who used the most of it over local days $2..=$3
-- (org_usage_by_member(), which ranks them), the first $4, with their name and email (users;
-- empty when the user is gone) and role (organization_members; NULL when no longer a
-- member), and how many members had usage at all (`with_usage`).
SELECT m.user_id, COALESCE(u.name, '') AS name, COALESCE(u.email, '') AS email,
       om.role, m.events, m.tokens, m.messages, m.bytes, m.cost,
       count(*) OVER () AS with_usage
  FROM org_usage_by_member($1, $2, $3) WITH ORDINALITY
       AS m (user_id, events, tokens, prompt_tokens, completion_tokens, messages, bytes,
             cost, rank)
  LEFT JOIN users u ON u.id = m.user_id
  LEFT JOIN organization_members om ON om.org_id = $1 AND om.user_id = m.user_id
 ORDER BY m.rank
 LIMIT $4
