-- One delivery per endpoint for each alert to be sent that this run decided (it runs in the
-- deciding transaction, so no alert is ever recorded without its deliveries). Superseded and
-- suppressed alerts get none; `unsubscribed` ones do (the recipient's email preference is
-- about email, not about the application's webhooks). The webhook-id is stable: msg_<alert id>_<endpoint key>.
-- An organization's threshold is one event, however many owners and admins are emailed: its
-- deliveries go with the alert of the first recipient to be emailed, in the run that first
-- decides the threshold (an admin added later is emailed, but the event is not sent again).
-- Usage at or past the limit (a threshold of 100, or a lower one reached in a jump past 100 %)
-- is `quota.exhausted`, as mail::webhook::event_type says; anything lower `quota.threshold`;
-- a forecast or a credit alert is its own type (`quota.forecast`, `credit.low`,
-- `credit.depleted`, `credit.recovered`).
-- Each endpoint receives the types it subscribed to.
-- $1 now, $2 endpoint ids (bigint[]), $3 endpoint keys (text[]), $4 the types each endpoint
-- wants, as '<endpoint id> <type>' (text[]), $5 one user id (personal alerts only) or NULL
-- for everyone.
INSERT INTO webhook_deliveries (alert_id, endpoint_id, event_type, webhook_id, next_attempt_at)
SELECT a.id, e.id, t.event_type, 'msg_' || a.id || '_' || e.endpoint_key, $1
  FROM quota_alerts a
 CROSS JOIN LATERAL (SELECT CASE WHEN a.alert <> 'quota' THEN a.alert
                                 WHEN a.threshold >= 100 OR a.used_value >= a.limit_value
                                 THEN 'quota.exhausted'
                                 ELSE 'quota.threshold' END AS event_type) t
  JOIN unnest($2::bigint[], $3::text[]) AS e (id, endpoint_key)
    ON (e.id || ' ' || t.event_type) = ANY ($4::text[])
 WHERE a.decided_at = $1
   AND a.status IN ('pending', 'unsubscribed')
   AND ($5::bigint IS NULL OR (a.user_id = $5 AND a.org_id = 0))
   AND (a.org_id = 0
        OR NOT EXISTS (SELECT 1 FROM quota_alerts b
                        WHERE b.org_id = a.org_id AND b.metric = a.metric AND b.period = a.period
                          AND b.kind = a.kind AND b.period_start = a.period_start
                          AND b.threshold = a.threshold AND b.alert = a.alert
                          AND b.grant_id = a.grant_id AND b.id <> a.id
                          AND (b.decided_at <> $1 OR (b.status IN ('pending', 'unsubscribed') AND b.user_id < a.user_id))))
ON CONFLICT ON CONSTRAINT webhook_deliveries_once DO NOTHING
