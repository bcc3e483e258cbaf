-- usage_grant(...): grants a subject `amount` more units of one metric per period kind, on
-- top of its plan, usable from `starts_at` until `expires_at`: a top-up, a bundle, a
-- goodwill credit. Returns the grant's id. Named arguments:
-- - p_user_id or p_org_id (exactly one): a user's personal quota, or an organization's;
-- - p_metric: requests | messages | tokens | bytes | cost;
-- - p_amount: above 0;
-- - p_period: 'day' or 'month' (default), the limit it extends;
-- - p_expires_at: after p_starts_at (default now());
-- - p_kind: '' (default) for the limit over all kinds, or one event kind's limit;
-- - p_reason: free text kept with the grant (an order number, a ticket).
-- Usage past the plan's limit of that metric, period kind and kind draws the subject's
-- active grants down, earliest expiry first (usage_grant_ledger). Refused with SQLSTATE
-- 22023 naming the argument, recording nothing, when an argument is wrong; 23503 when the
-- subject does not exist. The row keeps who granted (session_user) and when.
CREATE OR REPLACE FUNCTION usage_grant(p_user_id bigint DEFAULT NULL::bigint, p_org_id bigint DEFAULT NULL::bigint, p_metric text DEFAULT NULL::text, p_amount numeric DEFAULT NULL::numeric, p_period text DEFAULT 'month'::text, p_expires_at timestamptz DEFAULT NULL::timestamptz, p_starts_at timestamptz DEFAULT now(), p_reason text DEFAULT ''::text, p_kind text DEFAULT ''::text)
RETURNS bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_id   bigint;
    v_user bigint := COALESCE(p_user_id, 0);
    v_org  bigint := COALESCE(p_org_id, 0);
BEGIN
    IF (p_user_id IS NULL) = (p_org_id IS NULL) THEN
        RAISE EXCEPTION 'usage_grant: give exactly one of p_user_id and p_org_id (got %)',
              CASE WHEN p_user_id IS NULL THEN 'neither' ELSE 'both' END
              USING ERRCODE = '22023', HINT = 'p_user_id for a user''s own quota, p_org_id for an organization''s';
    END IF;
    IF p_org_id <= 0 THEN
        RAISE EXCEPTION 'usage_grant: p_org_id %: organization % cannot exist (organization ids are above 0)', p_org_id, p_org_id
              USING ERRCODE = '22023', HINT = 'p_user_id for a user''s own quota';
    END IF;
    IF p_metric IS NULL OR p_metric NOT IN ('requests', 'messages', 'tokens', 'bytes', 'cost') THEN
        RAISE EXCEPTION 'usage_grant: p_metric % is not a metric', COALESCE(quote_literal(p_metric), 'NULL')
              USING ERRCODE = '22023', HINT = 'one of requests, messages, tokens, bytes, cost';
    END IF;
    IF p_amount IS NULL OR NOT (p_amount > 0) OR p_amount = 'Infinity'::numeric OR p_amount = 'NaN'::numeric THEN
        RAISE EXCEPTION 'usage_grant: p_amount must be a number above 0, got %', COALESCE(p_amount::text, 'NULL')
              USING ERRCODE = '22023';
    END IF;
    IF p_period IS NULL OR p_period NOT IN ('day', 'month') THEN
        RAISE EXCEPTION 'usage_grant: p_period % is not a period kind', COALESCE(quote_literal(p_period), 'NULL')
              USING ERRCODE = '22023', HINT = 'day or month';
    END IF;
    IF p_kind IS NULL OR p_kind !~ '^([a-z][a-z0-9_]{0,63})?$' THEN
        RAISE EXCEPTION 'usage_grant: p_kind % is not an event kind', COALESCE(quote_literal(p_kind), 'NULL')
              USING ERRCODE = '22023', HINT = ''''' for the limit over all kinds, or a kind such as image_generation';
    END IF;
    IF p_starts_at IS NULL OR NOT isfinite(p_starts_at) THEN
        RAISE EXCEPTION 'usage_grant: p_starts_at must be a finite instant, got %', COALESCE(p_starts_at::text, 'NULL')
              USING ERRCODE = '22023';
    END IF;
    IF p_expires_at IS NULL OR NOT isfinite(p_expires_at) OR p_expires_at <= p_starts_at THEN
        RAISE EXCEPTION 'usage_grant: p_expires_at (%) must be a finite instant after p_starts_at (%)',
              COALESCE(p_expires_at::text, 'NULL'), p_starts_at
              USING ERRCODE = '22023', HINT = 'for example p_expires_at => now() + interval ''90 days''';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM usage_subjects s WHERE s.user_id = v_user AND s.org_id = v_org) THEN
        RAISE EXCEPTION 'usage_grant: % does not exist',
              CASE WHEN v_org > 0 THEN 'organization ' || v_org ELSE 'user ' || v_user END
              USING ERRCODE = '23503', HINT = 'add it to users (or organizations) first';
    END IF;
    INSERT INTO usage_grants (user_id, org_id, metric, period, kind, amount, starts_at, expires_at, reason)
    VALUES (v_user, v_org, p_metric, p_period, p_kind, p_amount, p_starts_at, p_expires_at, COALESCE(p_reason, ''))
    RETURNING id INTO v_id;
    RETURN v_id;
END;
$$;
