-- Forecasts and notification preferences: quota_status() and org_quota_status() project when
-- a limit will be reached (projected_exhaustion); forecast alerts (`quota.forecast`) in the
-- outbox, which stores the projection of every quota alert; which alert emails each user
-- receives (users.alert_emails), with the `unsubscribed` status for alerts it leaves out; and
-- the keys that sign one-click unsubscribe tokens (usage_unsubscribe()).
ALTER TABLE users
    ADD COLUMN alert_emails text NOT NULL DEFAULT 'all'
        CONSTRAINT users_alert_emails_check CHECK (alert_emails IN ('all', 'quota', 'credit', 'none'));

-- One row per signing key a daemon registered: derived from mail.unsubscribe_secret, never
-- the secret itself. Only the owner's functions read it (no grant to the application).
CREATE TABLE usage_unsubscribe_keys (
    key_id        text PRIMARY KEY CONSTRAINT usage_unsubscribe_keys_key_id_check CHECK (key_id ~ '^[0-9a-f]{16}$'),
    signing_key   bytea NOT NULL CONSTRAINT usage_unsubscribe_keys_signing_key_check CHECK (length(signing_key) = 32),
    registered_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE quota_alerts
    ADD COLUMN projected_exhaustion timestamptz;
ALTER TABLE quota_alerts DROP CONSTRAINT quota_alerts_alert_check;
ALTER TABLE quota_alerts ADD CONSTRAINT quota_alerts_alert_check
    CHECK (alert IN ('quota', 'quota.forecast', 'credit.low', 'credit.depleted', 'credit.recovered'));
ALTER TABLE quota_alerts DROP CONSTRAINT quota_alerts_status_check;
ALTER TABLE quota_alerts ADD CONSTRAINT quota_alerts_status_check
    CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'suppressed', 'superseded',
                      'expired', 'unsubscribed'));

ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_event_type_check;
ALTER TABLE webhook_deliveries ADD CONSTRAINT webhook_deliveries_event_type_check
    CHECK (event_type IN ('quota.threshold', 'quota.exhausted', 'quota.forecast',
                          'credit.low', 'credit.depleted', 'credit.recovered'));

DROP FUNCTION quota_status(bigint, timestamptz);
DROP FUNCTION org_quota_status(bigint, timestamptz);
DROP FUNCTION usage_subject_status(bigint, bigint, timestamptz);

-- ==== Written by scripts/sql-migration from sql/: the definitions this migration changes ====
SET LOCAL check_function_bodies = off;

-- org_quota_status(org_id, at = now()): an organization's shared quota state at `at`, in its
-- own zone and billing anchor; see usage_subject_status(). Nothing when the organization is
-- not in organizations, or not visible to the caller (row-level security).
CREATE OR REPLACE FUNCTION org_quota_status(p_org_id bigint, p_at timestamptz DEFAULT now())
RETURNS TABLE(metric text, period text, kind text, used numeric, limit_value numeric, remaining numeric, unlimited boolean, exceeded boolean, percent numeric, period_start timestamptz, period_end timestamptz, enforcement text, granted numeric, grant_remaining numeric, projected_exhaustion timestamptz)
LANGUAGE sql
STABLE
SET search_path FROM CURRENT
AS $$
    -- Organization ids are positive: (0, 0) would be user 0's personal usage.
    SELECT * FROM usage_subject_status(0, p_org_id, p_at) WHERE p_org_id > 0
$$;

-- quota_status(user_id, at = now()): a user's personal quota state (usage without an
-- organization) at `at`; see usage_subject_status(). Nothing when the user is not in users.
CREATE OR REPLACE FUNCTION quota_status(p_user_id bigint, p_at timestamptz DEFAULT now())
RETURNS TABLE(metric text, period text, kind text, used numeric, limit_value numeric, remaining numeric, unlimited boolean, exceeded boolean, percent numeric, period_start timestamptz, period_end timestamptz, enforcement text, granted numeric, grant_remaining numeric, projected_exhaustion timestamptz)
LANGUAGE sql
STABLE
SET search_path FROM CURRENT
AS $$
    SELECT * FROM usage_subject_status(p_user_id, 0, p_at)
$$;

-- usage_hmac_sha256(key, message): HMAC-SHA256 (RFC 2104) from the built-in sha256(), so
-- verifying an unsubscribe token needs no extension. Keys longer than the 64-byte block are
-- hashed first, shorter ones padded with zero bytes.
CREATE OR REPLACE FUNCTION usage_hmac_sha256(p_key bytea, p_message bytea)
RETURNS bytea
LANGUAGE plpgsql
IMMUTABLE
STRICT
PARALLEL SAFE
AS $$
DECLARE
    v_key   bytea := CASE WHEN length(p_key) > 64 THEN sha256(p_key) ELSE p_key END;
    v_inner bytea;
    v_outer bytea;
BEGIN
    v_key := v_key || decode(repeat('00', 64 - length(v_key)), 'hex');
    v_inner := v_key;
    v_outer := v_key;
    FOR i IN 0..63 LOOP
        v_inner := set_byte(v_inner, i, get_byte(v_key, i) # 54);  -- 0x36
        v_outer := set_byte(v_outer, i, get_byte(v_key, i) # 92);  -- 0x5c
    END LOOP;
    RETURN sha256(v_outer || sha256(v_inner || p_message));
END;
$$;

-- usage_projected_exhaustion(used, limit, period_start, period_end, at): the instant `used`
-- reaches `limit` if usage goes on at the average pace of the period so far, used / (at −
-- period_start): period_start + limit / used × (at − period_start). Already reached (used ≥
-- limit): when the average pace reached it, at or before `at`. NULL, never an instant of a
-- later period, when:
-- - there is no limit (NULL) or no usage (used ≤ 0), or no time has passed (at = period_start:
--   no pace yet);
-- - `at` is not inside [period_start, period_end);
-- - the instant would be at or after period_end: the period resets first.
-- The comparison is made in numeric before any interval is built, so a huge limit against a
-- tiny usage cannot overflow. IMMUTABLE and one expression: the planner inlines it.
CREATE OR REPLACE FUNCTION usage_projected_exhaustion(p_used numeric, p_limit numeric, p_period_start timestamptz, p_period_end timestamptz, p_at timestamptz)
RETURNS timestamptz
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
AS $$
    SELECT CASE
           WHEN p_limit IS NULL OR p_used IS NULL OR p_used <= 0 OR p_limit < 0
                OR p_at <= p_period_start OR p_at >= p_period_end THEN NULL
           WHEN p_limit * extract(epoch FROM p_at - p_period_start)
                >= p_used * extract(epoch FROM p_period_end - p_period_start) THEN NULL
           ELSE p_period_start
                + make_interval(secs => (p_limit * extract(epoch FROM p_at - p_period_start) / p_used)::float8)
           END
$$;

-- usage_set_alert_emails(user_id, preference): which alert emails a user receives, as the
-- application's "manage notifications" page sets it: 'all' (the default), 'quota' (quota
-- and forecast alerts only), 'credit' (credit alerts only) or 'none'. Returns the preference
-- now in effect: 'none' while users.alerts_enabled is false, whatever is stored. Alerts that
-- the preference leaves out are recorded `unsubscribed` (no email); webhooks are not
-- affected. SQLSTATE 22023 for another preference, 23503 for an unknown user.
-- SECURITY DEFINER: the caller needs no UPDATE on users.
CREATE OR REPLACE FUNCTION usage_set_alert_emails(p_user_id bigint, p_preference text)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    v_effective text;
BEGIN
    IF p_preference IS NULL OR p_preference NOT IN ('all', 'quota', 'credit', 'none') THEN
        RAISE EXCEPTION 'usage_set_alert_emails: p_preference % is not one of all, quota, credit, none; nothing changed', quote_nullable(p_preference)
              USING ERRCODE = '22023';
    END IF;
    UPDATE users u SET alert_emails = p_preference WHERE u.id = p_user_id
    RETURNING CASE WHEN u.alerts_enabled THEN u.alert_emails ELSE 'none' END INTO v_effective;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'usage_set_alert_emails: user % does not exist; nothing changed', p_user_id
              USING ERRCODE = '23503';
    END IF;
    RETURN v_effective;
END;
$$;
REVOKE EXECUTE ON FUNCTION usage_set_alert_emails(bigint, text) FROM PUBLIC;

-- usage_subject_status(user_id, org_id, at): the quota state of one subject (a user's
-- personal usage: (user, 0); an organization's: (0, org)) at `at`, the body of quota_status()
-- and org_quota_status(). One row per metric and period kind over all event kinds, and one
-- per kind-scoped limit of the subject's plan:
-- - `used`: every event of the period containing `at` that the caller's snapshot sees,
--   whether `aggregate` has counted it or not: the period's totals (usage_periods,
--   usage_period_kind_totals) plus the subject's events not yet counted
--   (usage_subject_pending), each event once.
-- - the period: the subject's open or closed period containing `at`, or, where none has
--   been opened yet, its natural period after any earlier one.
-- - `limit_value` (NULL: unlimited) and `enforcement` (`soft` or `hard`; NULL when unlimited).
-- - `granted` and `grant_remaining`: the subject's grants for that metric, period kind and
--   kind active at `at`, and what they have left after every event the caller sees, later
--   ones included (usage_grant_balance; 0 and 0 without any).
-- - `remaining`: what the plan has left plus what the grants have; `exceeded`: the plan's
--   limit is reached and the grants are used up; `percent`: of the plan's limit.
-- - `projected_exhaustion`: when `used` reaches the plan's limit at the period's average
--   pace so far, seen from `at` (usage_projected_exhaustion); NULL when that is not before
--   the period ends, or without a limit or usage. Grants are not counted in it.
-- No row when the subject is not in usage_subjects. STABLE: every statement reads one
-- snapshot, so the totals and the watermark that splits counted from pending agree.
CREATE OR REPLACE FUNCTION usage_subject_status(p_user_id bigint, p_org_id bigint, p_at timestamptz)
RETURNS TABLE(metric text, period text, kind text, used numeric, limit_value numeric, remaining numeric, unlimited boolean, exceeded boolean, percent numeric, period_start timestamptz, period_end timestamptz, enforcement text, granted numeric, grant_remaining numeric, projected_exhaustion timestamptz)
LANGUAGE plpgsql
STABLE
AS $$
#variable_conflict use_column
DECLARE
    c_start    timestamptz;
    c_end      timestamptz;
    c_requests bigint;
    c_messages bigint;
    c_tokens   bigint;
    c_bytes    bigint;
    c_cost     numeric;
    b          record;
    per    text;
    p_from timestamptz;
    p_to   timestamptz;
    known  boolean;
    p_tz     text;
    p_anchor integer;
    p_plan   bigint;
    grant_keys text[];
BEGIN
    SELECT su.timezone, su.billing_anchor_day, su.plan_id INTO p_tz, p_anchor, p_plan
      FROM usage_subjects su
     WHERE su.user_id = p_user_id AND su.org_id = p_org_id;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- The limits the subject has grants on ('metric/period/kind'): only those read them.
    SELECT array_agg(DISTINCT g.metric || '/' || g.period || '/' || g.kind) INTO grant_keys
      FROM usage_grants g WHERE g.user_id = p_user_id AND g.org_id = p_org_id;
    FOREACH per IN ARRAY ARRAY['day', 'month'] LOOP
        -- The latest period starting at or before `at`: the current one if it has not ended.
        SELECT up.period_start, up.period_end, up.requests, up.messages, up.tokens, up.bytes, up.cost
          INTO c_start, c_end, c_requests, c_messages, c_tokens, c_bytes, c_cost
          FROM usage_periods up
         WHERE up.user_id = p_user_id AND up.org_id = p_org_id AND up.period = per
           AND up.period_start <= p_at
         ORDER BY up.period_start DESC
         LIMIT 1;
        known := FOUND AND c_end > p_at;
        IF known THEN
            p_from := c_start;
            p_to := c_end;
        ELSE
            -- Nothing counted yet in this period: its natural bounds, after any earlier one.
            b := usage_period_bounds(p_tz, p_anchor, per, p_at);
            SELECT t.period_start, t.period_end INTO p_from, p_to
              FROM usage_period_between(b.period_start, b.period_end, c_end, NULL) t;
        END IF;
        -- The five totals over all kinds, then one row per kind-scoped limit: UNION ALL and one
        -- small sort, no de-duplication. Each is the counted total plus the pending events.
        RETURN QUERY
        WITH pending AS MATERIALIZED (
            SELECT e.kind, count(*)::numeric AS requests, sum(e.messages)::numeric AS messages,
                   sum(e.tokens)::numeric AS tokens, sum(e.bytes)::numeric AS bytes,
                   sum(e.cost) AS cost
              FROM usage_subject_pending(p_user_id, p_org_id, p_from, p_to) e
             GROUP BY e.kind
        ), pending_all AS (
            SELECT COALESCE(sum(requests), 0) AS requests, COALESCE(sum(messages), 0) AS messages,
                   COALESCE(sum(tokens), 0) AS tokens, COALESCE(sum(bytes), 0) AS bytes,
                   COALESCE(sum(cost), 0) AS cost
              FROM pending
        )
        SELECT x.metric, per, x.kind, x.used, x.limit_value,
               CASE WHEN x.limit_value IS NOT NULL
                    THEN GREATEST(x.limit_value - x.used, 0) + COALESCE(gb.balance, 0) END,
               x.limit_value IS NULL,
               COALESCE(x.used >= x.limit_value AND COALESCE(gb.balance, 0) <= 0, false),
               CASE WHEN x.limit_value IS NULL THEN NULL
                    WHEN x.limit_value = 0 THEN 100::numeric
                    ELSE round(x.used * 100 / x.limit_value, 2) END,
               p_from, p_to, x.enforcement,
               COALESCE(gb.granted, 0), COALESCE(gb.balance, 0),
               usage_projected_exhaustion(x.used, x.limit_value, p_from, p_to, p_at)
          FROM (SELECT m.metric, ''::text AS kind,
                       CASE WHEN NOT known THEN 0::numeric ELSE m.used END + m.pending AS used,
                       l.max_value AS limit_value, l.enforcement
                  FROM pending_all pa
                 CROSS JOIN LATERAL (VALUES ('bytes', c_bytes::numeric, pa.bytes),
                                            ('cost', c_cost, pa.cost),
                                            ('messages', c_messages::numeric, pa.messages),
                                            ('requests', c_requests::numeric, pa.requests),
                                            ('tokens', c_tokens::numeric, pa.tokens))
                       AS m (metric, used, pending)
                  LEFT JOIN plan_limits l
                    ON l.plan_id = p_plan AND l.period = per AND l.kind = '' AND l.metric = m.metric
                UNION ALL
                SELECT l.metric, l.kind,
                       COALESCE(CASE l.metric WHEN 'requests' THEN k.requests::numeric
                                              WHEN 'messages' THEN k.messages::numeric
                                              WHEN 'tokens' THEN k.tokens::numeric
                                              WHEN 'bytes' THEN k.bytes::numeric
                                              ELSE k.cost END, 0)
                       + COALESCE(CASE l.metric WHEN 'requests' THEN pk.requests
                                                WHEN 'messages' THEN pk.messages
                                                WHEN 'tokens' THEN pk.tokens
                                                WHEN 'bytes' THEN pk.bytes
                                                ELSE pk.cost END, 0),
                       l.max_value, l.enforcement
                  FROM plan_limits l
                  LEFT JOIN usage_period_kind_totals k
                    ON known AND k.user_id = p_user_id AND k.org_id = p_org_id AND k.period = per
                   AND k.period_start = p_from AND k.kind = l.kind
                  LEFT JOIN pending pk ON pk.kind = l.kind
                 WHERE l.plan_id = p_plan AND l.period = per AND l.kind <> '') AS x
          -- Only for a limit the subject has grants on: the others pay one index probe per call.
          LEFT JOIN LATERAL (SELECT b.granted, b.balance
                               FROM usage_grant_balance(p_user_id, p_org_id, x.metric, per, x.kind, p_at) b
                              WHERE x.metric || '/' || per || '/' || x.kind = ANY (grant_keys)) gb ON true
         ORDER BY x.metric, x.kind;
    END LOOP;
END;
$$;

-- usage_unsubscribe(token): applies the unsubscribe token of a List-Unsubscribe link (the
-- `token` query parameter the daemon put in an alert email's header), as the application's
-- one-click endpoint receives it. Returns the user and the alert emails they now receive
-- (users.alert_emails); no row when the user no longer exists.
--
-- A token is `u1.<user id>.<scope>.<expires, Unix seconds>.<key id>.<HMAC-SHA256, hex>`:
-- scope `all` (the header's: every alert email off), `quota` or `credit` (that kind off).
-- The MAC is over everything before it, keyed by the signing key the daemon registered in
-- usage_unsubscribe_keys (derived from mail.unsubscribe_secret; key id = the first 16 hex
-- digits of its SHA-256). Refused with SQLSTATE 22023, changing nothing, when the token is
-- malformed, was signed by another installation (unknown key), was altered (MAC mismatch)
-- or has expired. Applying it twice is harmless. SECURITY DEFINER: the caller needs no
-- privilege on the keys or on users.
CREATE OR REPLACE FUNCTION usage_unsubscribe(p_token text)
RETURNS TABLE(user_id bigint, unsubscribed text, alert_emails text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
#variable_conflict use_column
DECLARE
    v_parts   text[];
    v_user    bigint;
    v_scope   text;
    v_expires bigint;
    v_key     bytea;
BEGIN
    v_parts := regexp_match(COALESCE(p_token, ''),
        '^u1\.([0-9]{1,18})\.(all|quota|credit)\.([0-9]{1,12})\.([0-9a-f]{16})\.([0-9a-f]{64})$');
    IF v_parts IS NULL THEN
        RAISE EXCEPTION 'usage_unsubscribe: not an unsubscribe token; nothing changed'
              USING ERRCODE = '22023',
                    HINT = 'pass the token query parameter of the List-Unsubscribe link as it is';
    END IF;
    v_user := v_parts[1]::bigint;
    v_scope := v_parts[2];
    v_expires := v_parts[3]::bigint;
    SELECT k.signing_key INTO v_key FROM usage_unsubscribe_keys k WHERE k.key_id = v_parts[4];
    IF NOT FOUND THEN
        RAISE EXCEPTION 'usage_unsubscribe: the token was signed by another installation (key % is unknown here); nothing changed', v_parts[4]
              USING ERRCODE = '22023',
                    HINT = 'only tokens from this installation''s alert emails are accepted';
    END IF;
    IF encode(usage_hmac_sha256(v_key, convert_to(left(p_token, length(p_token) - 65), 'UTF8')), 'hex')
       <> v_parts[5] THEN
        RAISE EXCEPTION 'usage_unsubscribe: the token''s signature does not match: it was altered; nothing changed'
              USING ERRCODE = '22023',
                    HINT = 'pass the token query parameter of the List-Unsubscribe link as it is';
    END IF;
    IF v_expires < extract(epoch FROM now()) THEN
        RAISE EXCEPTION 'usage_unsubscribe: the token of user % expired at %; nothing changed',
              v_user, to_timestamp(v_expires)
              USING ERRCODE = '22023',
                    HINT = 'a newer alert email carries a fresh token; preferences can also be changed with usage_set_alert_emails()';
    END IF;
    RETURN QUERY
    UPDATE users u
       SET alert_emails = CASE WHEN v_scope = 'all' OR u.alert_emails IN ('none', v_scope) THEN 'none'
                               WHEN u.alert_emails = 'all'
                               THEN CASE v_scope WHEN 'quota' THEN 'credit' ELSE 'quota' END
                               ELSE u.alert_emails END
     WHERE u.id = v_user
    RETURNING u.id, v_scope, u.alert_emails;
END;
$$;
REVOKE EXECUTE ON FUNCTION usage_unsubscribe(text) FROM PUBLIC;

-- usage_subjects: every subject, with what its books are kept by. A subject is whose quota
-- usage counts against: a user's personal usage, keyed (user_id = the user, org_id = 0), or
-- an organization's shared usage, keyed (user_id = 0, org_id = the organization). Periods,
-- per-kind totals and alerts are keyed the same way; usage_event_subject() maps an event to
-- its subject.
--
-- timezone is as declared (usage_timezone_or_utc() gives the zone actually used), anchor the
-- billing anchor day (NULL: calendar months), email NULL for an organization (its alerts go
-- to its owners and admins), alert_emails the user's email preference ('all' for an
-- organization: its recipients' own preferences apply). security_invoker: a reader sees what the policies let it see of
-- users and organizations, here as anywhere.
CREATE OR REPLACE VIEW usage_subjects WITH (security_invoker = true) AS
SELECT u.id AS user_id, 0::bigint AS org_id, u.name, u.email, u.timezone,
       u.billing_anchor_day, u.plan_id, u.alerts_enabled, u.alert_emails
  FROM users u
UNION ALL
SELECT 0::bigint, o.id, o.name, NULL::text, o.timezone, o.billing_anchor_day, o.plan_id,
       o.alerts_enabled, 'all'::text
  FROM organizations o;
