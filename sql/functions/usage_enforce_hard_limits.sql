-- usage_enforce_hard_limits(user_id, org_id, kind, at, messages, tokens, bytes, cost): refuses
-- an event that would take its subject past a hard limit of its plan (usage_limit_checks),
-- with SQLSTATE UQ001 and a message naming the subject, metric, period, kind, limit, what is
-- used, what its grants have left and when the period resets. Called by usage_record() before it inserts, only for a
-- subject whose plan has a hard limit.
-- - Atomic under concurrency: it first takes a transaction lock of the subject (advisory
--   class 0x5551 'UQ', key a hash of the subject), so calls for one subject check one at a
--   time, each after the one before has committed or rolled back; the check is a statement
--   of its own, whose fresh snapshot (READ COMMITTED) sees that event.
-- - A REPEATABLE READ transaction keeps the snapshot it started with and would not see the
--   events recorded meanwhile: refused (SQLSTATE UQ002). SERIALIZABLE is safe: PostgreSQL
--   fails one of two conflicting calls with a serialization failure, to be retried.
CREATE OR REPLACE FUNCTION usage_enforce_hard_limits(p_user_id bigint, p_org_id bigint, p_kind text, p_at timestamptz, p_messages numeric, p_tokens numeric, p_bytes numeric, p_cost numeric)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    r       record;
    v_who   text := CASE WHEN p_org_id > 0 THEN 'organization ' || p_org_id ELSE 'user ' || p_user_id END;
    v_zone  text;
BEGIN
    IF current_setting('transaction_isolation') = 'repeatable read' THEN
        RAISE EXCEPTION 'usage_record: the hard limits of % cannot be enforced in a REPEATABLE READ transaction, whose snapshot does not see the events recorded since it began', v_who
              USING ERRCODE = 'UQ002',
                    HINT = 'call usage_record() in a READ COMMITTED (the default) or SERIALIZABLE transaction';
    END IF;
    PERFORM pg_advisory_xact_lock(21841, hashtext(p_user_id::text || ':' || p_org_id::text));
    SELECT c.* INTO r
      FROM usage_limit_checks(p_user_id, p_org_id, p_kind, p_at, p_messages, p_tokens, p_bytes, p_cost) c
     WHERE c.enforcement = 'hard' AND NOT c.fits
     ORDER BY c.period, c.metric, c.kind
     LIMIT 1;
    IF FOUND THEN
        SELECT usage_timezone_or_utc(s.timezone) INTO v_zone
          FROM usage_subjects s WHERE s.user_id = p_user_id AND s.org_id = p_org_id;
        RAISE EXCEPTION 'usage_record: hard limit reached for %: % per % (%) is %, % used, % left in grants, this event adds %; it resets at % %',
              v_who, r.metric, r.period, CASE WHEN r.kind = '' THEN 'all kinds' ELSE 'kind ' || r.kind END,
              r.limit_value, r.used, r.balance, r.amount,
              to_char(r.period_end AT TIME ZONE COALESCE(v_zone, 'UTC'), 'YYYY-MM-DD HH24:MI:SS'),
              COALESCE(v_zone, 'UTC')
              USING ERRCODE = 'UQ001',
                    DETAIL = format('metric=%s period=%s kind=%s limit=%s used=%s grant_remaining=%s amount=%s resets_at=%s',
                                    r.metric, r.period, r.kind, r.limit_value, r.used, r.balance, r.amount,
                                    to_char(r.period_end AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')),
                    HINT = 'nothing was recorded; the limit is plan_limits.enforcement = ''hard''';
    END IF;
END;
$$;
