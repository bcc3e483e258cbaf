-- Alert thresholds per plan, and webhook delivery through the alert outbox.

-- NULL: the plan uses alerts.thresholds. 100 means "used up" (quota.exhausted).
ALTER TABLE plans
    ADD COLUMN alert_thresholds smallint[]
        CONSTRAINT plans_alert_thresholds_check
        CHECK (alert_thresholds IS NULL
               OR (cardinality(alert_thresholds) > 0
                   AND array_position(alert_thresholds, NULL) IS NULL
                   AND 1 <= ALL (alert_thresholds) AND 100 >= ALL (alert_thresholds)));

-- One row per configured endpoint, keyed by a hash of its URL (so rotating a secret keeps the
-- endpoint and its pending deliveries). config_hash covers URL and secrets: an endpoint
-- disabled by `410 Gone` is enabled again when its configuration changes.
CREATE TABLE webhook_endpoints (
    id              bigserial   PRIMARY KEY,
    endpoint_key    text        NOT NULL CONSTRAINT webhook_endpoints_key_unique UNIQUE,
    host            text        NOT NULL,
    config_hash     text        NOT NULL,
    disabled_at     timestamptz,
    disabled_reason text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- One delivery per (alert, endpoint), decided in the transaction that records the alert.
-- webhook_id is the Standard Webhooks `webhook-id`: the same on every attempt.
CREATE TABLE webhook_deliveries (
    id               bigserial   PRIMARY KEY,
    alert_id         bigint      NOT NULL REFERENCES quota_alerts (id) ON DELETE CASCADE,
    endpoint_id      bigint      NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_type       text        NOT NULL CONSTRAINT webhook_deliveries_event_type_check
                                 CHECK (event_type IN ('quota.threshold', 'quota.exhausted')),
    webhook_id       text        NOT NULL CONSTRAINT webhook_deliveries_webhook_id_unique UNIQUE,
    -- pending:   to be sent at next_attempt_at
    -- sending:   claimed by a run until leased_until
    -- delivered: the endpoint answered 2xx
    -- failed:    a permanent rejection (4xx, 410, a redirect) or max_attempts failures
    -- expired:   not delivered by alerts.expire_after after the alert's period ended
    status           text        NOT NULL DEFAULT 'pending' CONSTRAINT webhook_deliveries_status_check
                                 CHECK (status IN ('pending', 'sending', 'delivered', 'failed', 'expired')),
    attempts         integer     NOT NULL DEFAULT 0 CONSTRAINT webhook_deliveries_attempts_not_negative
                                 CHECK (attempts >= 0),
    next_attempt_at  timestamptz NOT NULL,
    leased_until     timestamptz,
    last_status_code smallint,
    -- timeout, connection, tls, server_error, rate_limited, rejected, gone, redirect, local
    error_class      text,
    last_error       text,
    delivered_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_deliveries_once UNIQUE (alert_id, endpoint_id),
    CONSTRAINT webhook_deliveries_sending_has_lease CHECK ((status = 'sending') = (leased_until IS NOT NULL))
);

CREATE INDEX webhook_deliveries_pending_due_idx ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_sending_lease_idx ON webhook_deliveries (leased_until) WHERE status = 'sending';
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id);
