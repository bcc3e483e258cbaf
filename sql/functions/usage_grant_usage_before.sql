-- usage_grant_usage_before(user_id, org_id, period, kind, metric, since, at, pending): how
-- much of `metric` the subject used in [since, at) (events of `kind`, or of every kind for
-- ''), where `since` starts the period of kind `period` that contains `at`: the usage before
-- a grant's start, expiry or void inside a period (usage_grant_ledger). Counted events come
-- from the mark the aggregate job keeps for that instant (usage_grant_marks, moved with the
-- watermark in one transaction); with `pending`, the events not counted yet are added. With
-- no mark yet (the instant is new), the raw events answer: those below the watermark and not
-- set aside, and with `pending` the rest.
CREATE OR REPLACE FUNCTION usage_grant_usage_before(p_user_id bigint, p_org_id bigint, p_period text, p_kind text, p_metric text, p_since timestamptz, p_at timestamptz, p_pending boolean)
RETURNS numeric
LANGUAGE plpgsql
STABLE
AS $$
DECLARE
    v_counted numeric;
    v_pending numeric := 0;
BEGIN
    SELECT CASE p_metric WHEN 'requests' THEN m.requests::numeric WHEN 'messages' THEN m.messages::numeric
                         WHEN 'tokens' THEN m.tokens::numeric WHEN 'bytes' THEN m.bytes::numeric
                         ELSE m.cost END
      INTO v_counted
      FROM usage_grant_marks m
     WHERE m.user_id = p_user_id AND m.org_id = p_org_id AND m.period = p_period
       AND m.kind = p_kind AND m.at = p_at AND m.since = p_since;
    IF NOT FOUND THEN
        SELECT COALESCE(sum(CASE p_metric WHEN 'requests' THEN 1::numeric WHEN 'messages' THEN e.messages::numeric
                                          WHEN 'tokens' THEN e.tokens::numeric WHEN 'bytes' THEN e.bytes::numeric
                                          ELSE e.cost END), 0)
          INTO v_counted
          FROM usage_events e
         WHERE ((p_org_id = 0 AND e.org_id IS NULL AND e.user_id = p_user_id) OR (p_org_id > 0 AND e.org_id = p_org_id))
           AND e.created_at >= p_since AND e.created_at < p_at
           AND (p_kind = '' OR e.kind = p_kind)
           AND e.recorded_xid < (SELECT w.xid FROM aggregation_watermark w)
           AND NOT EXISTS (SELECT 1 FROM usage_quarantine q
                            WHERE q.event_id = e.id AND q.created_at = e.created_at);
    END IF;
    IF p_pending THEN
        SELECT COALESCE(sum(CASE p_metric WHEN 'requests' THEN 1::numeric WHEN 'messages' THEN e.messages::numeric
                                          WHEN 'tokens' THEN e.tokens::numeric WHEN 'bytes' THEN e.bytes::numeric
                                          ELSE e.cost END), 0)
          INTO v_pending
          FROM usage_subject_pending(p_user_id, p_org_id, p_since, p_at) e
         WHERE p_kind = '' OR e.kind = p_kind;
    END IF;
    RETURN v_counted + v_pending;
END;
$$;
