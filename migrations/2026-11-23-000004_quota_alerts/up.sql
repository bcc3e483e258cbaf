-- The alert outbox. The `alerts` job decides (one row per user, metric, period kind, event
-- kind, period start and threshold: the UNIQUE key makes every alert exactly-once) and then
-- delivers, retrying with backoff until the row is `sent` or gives up as `failed`/`expired`.
CREATE TABLE quota_alerts (
    id              bigserial   PRIMARY KEY,
    user_id         bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    metric          text        NOT NULL CONSTRAINT quota_alerts_metric_check
                                CHECK (metric IN ('requests', 'messages', 'tokens', 'bytes', 'cost')),
    period          text        NOT NULL CONSTRAINT quota_alerts_period_check CHECK (period IN ('day', 'month')),
    kind            text        NOT NULL DEFAULT '',  -- '' = the limit over all event kinds
    period_start    timestamptz NOT NULL,
    period_end      timestamptz NOT NULL,
    threshold       smallint    NOT NULL CONSTRAINT quota_alerts_threshold_check CHECK (threshold BETWEEN 1 AND 100),
    -- Usage and limit when the threshold was found crossed: what the email reports.
    used_value      numeric     NOT NULL,
    limit_value     numeric     NOT NULL,
    -- pending:    to be sent at next_attempt_at
    -- sending:    claimed by a run until leased_until (a crashed run's rows are retried after it)
    -- sent:       delivered to the mail transport with message_id
    -- failed:     permanently rejected, or max_attempts transient failures
    -- suppressed: the user has alerts_enabled = false
    -- superseded: a higher threshold was crossed at the same time; only that one is sent
    -- expired:    not delivered by alerts.expire_after after the period ended
    status          text        NOT NULL DEFAULT 'pending' CONSTRAINT quota_alerts_status_check
                                CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'suppressed',
                                                  'superseded', 'expired')),
    attempts        integer     NOT NULL DEFAULT 0 CONSTRAINT quota_alerts_attempts_not_negative CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL,
    leased_until    timestamptz,
    last_error      text,
    error_class     text,       -- connection, timeout, tls, auth, transient, permanent, invalid_address, local
    -- Derived from the key, so a resend after a crash is recognisable as the same message.
    message_id      text,
    decided_at      timestamptz NOT NULL,
    sent_at         timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT quota_alerts_once UNIQUE (user_id, metric, period, kind, period_start, threshold),
    CONSTRAINT quota_alerts_sending_has_lease CHECK ((status = 'sending') = (leased_until IS NOT NULL)),
    CONSTRAINT quota_alerts_sent_has_message_id CHECK (status <> 'sent' OR message_id IS NOT NULL)
);

-- What delivery claims: due pending rows, and sending rows whose lease ran out.
CREATE INDEX quota_alerts_pending_due_idx ON quota_alerts (next_attempt_at) WHERE status = 'pending';
CREATE INDEX quota_alerts_sending_lease_idx ON quota_alerts (leased_until) WHERE status = 'sending';
