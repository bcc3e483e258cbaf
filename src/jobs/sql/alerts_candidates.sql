-- alert_candidates: the alerts usage calls for right now: every open period of a subject
-- whose plan limits the metric (no plan_limits row = unlimited = never an alert), joined to
-- each configured threshold its usage has reached: the plan's alert_thresholds, or
-- alerts.thresholds when the plan has none. One set-based pass over the open periods.
--
-- A subject is a user's personal usage (period user_id = the user, org_id 0; the user is
-- the recipient) or an organization's (period user_id 0, org_id = the organization; each
-- owner and admin is a recipient, so an organization's threshold gives one row per
-- recipient); plan and alert setting are the subject's (usage_subjects). Periods are matched
-- on both columns: user id 0 is a legal user. The two kinds of subject are read in two
-- branches, each joining its periods to its subjects and recipients, so that the planner
-- sees the real number of recipients (a UNION ALL of recipients joined to the periods
-- afterwards hid it, and the periods were joined in nested loops). An open period
-- that ended long ago (its reset has not run) would only expire: it is left out.
--
-- When several thresholds are reached, every one but the highest is `superseded`: only the
-- highest is sent. Recipients who turned alerts off, and every recipient of an organization
-- that did, get `suppressed` rows (a record, no email, no webhook); recipients whose
-- users.alert_emails leaves quota alerts out get `unsubscribed` rows (no email; the webhooks
-- still go). Nothing is alerted at zero usage, even against a limit of 0.
--
-- Every row carries the projection (usage_projected_exhaustion at $1, from the counted
-- usage). With $5 set, a period whose limit is not reached yet and whose projection falls
-- within the next $5 seconds (and so before the period ends) also gets a forecast,
-- alert `quota.forecast`, threshold 100: in the threshold list it is the marker 0, which no
-- percentage can be (1 to 100), so it passes the threshold test and supersedes nothing.
--
-- $1 now (timestamptz), $2 thresholds (int[]), $3 alerts.expire_after in seconds (float8),
-- $4 one user id (that user's personal quota only), or NULL for everyone (--user),
-- $5 alerts.forecast_hours in seconds (float8), or NULL: no forecasts. Read by
-- alerts_decide.sql and alerts_preview.sql; alerts_credit_candidates.sql adds the credit alerts
-- (`alert` other than 'quota').
CREATE TEMP TABLE alert_candidates ON COMMIT DROP AS
SELECT l.user_id, l.org_id, l.metric, l.period, l.kind, l.period_start, l.period_end,
       CASE WHEN t.threshold = 0 THEN 100 ELSE t.threshold END::smallint AS threshold,
       l.used AS used_value, l.max_value AS limit_value,
       CASE WHEN NOT l.alerts_enabled THEN 'suppressed'
            WHEN t.threshold < max(t.threshold) OVER alert_key AND t.threshold > 0 THEN 'superseded'
            WHEN l.alert_emails NOT IN ('all', 'quota') THEN 'unsubscribed'
            ELSE 'pending' END AS status,
       CASE WHEN t.threshold = 0 THEN 'quota.forecast' ELSE 'quota' END AS alert,
       0::bigint AS grant_id,
       usage_projected_exhaustion(l.used, l.max_value, l.period_start, l.period_end, $1)
           AS projected_exhaustion
  FROM (SELECT up.recipient AS user_id, up.org_id, lim.metric, up.period, lim.kind,
               up.period_start, up.period_end, lim.max_value, up.alerts_enabled, p.alert_thresholds,
               up.alert_emails,
               CASE WHEN lim.kind = '' THEN
                        CASE lim.metric WHEN 'requests' THEN up.requests::numeric
                                        WHEN 'messages' THEN up.messages::numeric
                                        WHEN 'tokens'   THEN up.tokens::numeric
                                        WHEN 'bytes'    THEN up.bytes::numeric
                                        ELSE up.cost END
                    ELSE COALESCE(CASE lim.metric WHEN 'requests' THEN k.requests::numeric
                                                  WHEN 'messages' THEN k.messages::numeric
                                                  WHEN 'tokens'   THEN k.tokens::numeric
                                                  WHEN 'bytes'    THEN k.bytes::numeric
                                                  ELSE k.cost END, 0)
               END AS used
          FROM (SELECT up.user_id, up.org_id, up.period, up.period_start, up.period_end,
                       up.requests, up.messages, up.tokens, up.bytes, up.cost, s.plan_id,
                       s.user_id AS recipient, s.alerts_enabled, s.alert_emails
                  FROM usage_periods up
                  JOIN usage_subjects s ON s.user_id = up.user_id AND s.org_id = 0
                 WHERE up.org_id = 0
                   AND ($4::bigint IS NULL OR up.user_id = $4)
                   AND up.status = 'open' AND up.period_start <= $1
                   AND up.period_end > $1 - make_interval(secs => $3)
                UNION ALL
                SELECT up.user_id, up.org_id, up.period, up.period_start, up.period_end,
                       up.requests, up.messages, up.tokens, up.bytes, up.cost, s.plan_id,
                       r.id, s.alerts_enabled AND r.alerts_enabled, r.alert_emails
                  FROM usage_periods up
                  JOIN usage_subjects s ON s.user_id = 0 AND s.org_id = up.org_id
                  JOIN organization_members m ON m.org_id = s.org_id AND m.role IN ('owner', 'admin')
                  JOIN users r ON r.id = m.user_id
                 WHERE up.user_id = 0 AND up.org_id > 0 AND $4::bigint IS NULL
                   AND up.status = 'open' AND up.period_start <= $1
                   AND up.period_end > $1 - make_interval(secs => $3)) up
          JOIN plans p ON p.id = up.plan_id
          JOIN plan_limits lim ON lim.plan_id = up.plan_id AND lim.period = up.period
          LEFT JOIN usage_period_kind_totals k
                 ON lim.kind <> '' AND k.user_id = up.user_id AND k.org_id = up.org_id
                AND k.period = up.period AND k.period_start = up.period_start AND k.kind = lim.kind) l
 CROSS JOIN unnest(COALESCE(l.alert_thresholds::int[], $2::int[])
                   || CASE WHEN $5::float8 IS NOT NULL AND l.used < l.max_value
                                AND usage_projected_exhaustion(l.used, l.max_value, l.period_start,
                                                               l.period_end, $1)
                                    <= $1 + make_interval(secs => $5)
                           THEN ARRAY[0] ELSE ARRAY[]::int[] END) AS t (threshold)
 WHERE l.used > 0
   AND l.used * 100 >= l.max_value * t.threshold
WINDOW alert_key AS (PARTITION BY l.user_id, l.org_id, l.metric, l.period, l.kind, l.period_start)
