-- Core schema: plans and limits, users, the partitioned event log, prices, the run ledger
-- and the aggregation watermark. Names are an interface: applications and operators rely on them.

CREATE TABLE plans (
    id         bigserial PRIMARY KEY,
    name       text NOT NULL UNIQUE CHECK (name <> ''),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- No row for a (plan, metric, period, kind) means that metric is unlimited on the plan.
CREATE TABLE plan_limits (
    plan_id   bigint  NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
    metric    text    NOT NULL CONSTRAINT plan_limits_metric_check
                          CHECK (metric IN ('requests', 'messages', 'tokens', 'bytes', 'cost')),
    period    text    NOT NULL CONSTRAINT plan_limits_period_check CHECK (period IN ('day', 'month')),
    kind      text    NOT NULL DEFAULT '' CONSTRAINT plan_limits_kind_check
                          CHECK (kind = '' OR kind ~ '^[a-z][a-z0-9_]{0,63}$'),
    max_value numeric NOT NULL CONSTRAINT plan_limits_max_value_not_negative CHECK (max_value >= 0),
    PRIMARY KEY (plan_id, metric, period, kind)
);

CREATE TABLE users (
    id                 bigint PRIMARY KEY,           -- the application's own user id
    email              text NOT NULL,
    name               text NOT NULL DEFAULT '',
    timezone           text NOT NULL DEFAULT 'UTC',  -- IANA name; an unknown one is treated as UTC and reported
    plan_id            bigint REFERENCES plans (id),
    billing_anchor_day smallint CONSTRAINT users_billing_anchor_day_check
                           CHECK (billing_anchor_day BETWEEN 1 AND 31), -- NULL = calendar month
    alerts_enabled     boolean NOT NULL DEFAULT true,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX users_plan_id_idx ON users (plan_id);

-- One row per usage event, partitioned by month (UTC) on created_at. The default partition
-- means an insert never fails for lack of a partition; the `partitions` job moves its rows out.
CREATE TABLE usage_events (
    id                bigserial,
    user_id           bigint  NOT NULL,
    kind              text    NOT NULL CONSTRAINT usage_events_kind_check
                                  CHECK (kind ~ '^[a-z][a-z0-9_]{0,63}$'),
    request_type      text    NOT NULL DEFAULT '' CONSTRAINT usage_events_request_type_check
                                  CHECK (request_type ~ '^([a-z0-9][a-z0-9_.-]{0,63})?$'),
    model             text    NOT NULL DEFAULT '' CONSTRAINT usage_events_model_check
                                  CHECK (length(model) <= 200),
    tokens            bigint  NOT NULL DEFAULT 0 CONSTRAINT usage_events_tokens_not_negative CHECK (tokens >= 0),
    prompt_tokens     bigint  NOT NULL DEFAULT 0 CONSTRAINT usage_events_prompt_tokens_not_negative CHECK (prompt_tokens >= 0),
    completion_tokens bigint  NOT NULL DEFAULT 0 CONSTRAINT usage_events_completion_tokens_not_negative CHECK (completion_tokens >= 0),
    messages          integer NOT NULL DEFAULT 0 CONSTRAINT usage_events_messages_not_negative CHECK (messages >= 0),
    bytes             bigint  NOT NULL DEFAULT 0 CONSTRAINT usage_events_bytes_not_negative CHECK (bytes >= 0),
    cost              numeric(20, 8) NOT NULL DEFAULT 0 CONSTRAINT usage_events_cost_not_negative CHECK (cost >= 0),
    metadata          jsonb   NOT NULL DEFAULT '{}' CONSTRAINT usage_events_metadata_size
                                  CHECK (octet_length(metadata::text) <= 65536),
    created_at        timestamptz NOT NULL DEFAULT now(),
    -- The inserting transaction's id: what makes aggregation exactly-once.
    recorded_xid      xid8 NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

CREATE TABLE usage_events_default PARTITION OF usage_events DEFAULT;

CREATE INDEX usage_events_user_created_idx ON usage_events (user_id, created_at);
CREATE INDEX usage_events_user_kind_created_idx ON usage_events (user_id, kind, created_at);
CREATE INDEX usage_events_recorded_xid_idx ON usage_events (recorded_xid);

-- Unit prices used by usage_record() when the caller gives no cost. model = '' is the
-- fallback for a kind; the row with the latest valid_from at or before the event applies.
CREATE TABLE prices (
    kind                     text    NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_]{0,63}$'),
    model                    text    NOT NULL DEFAULT '',
    valid_from               timestamptz NOT NULL DEFAULT '-infinity',
    per_event                numeric NOT NULL DEFAULT 0 CHECK (per_event >= 0),
    per_1k_prompt_tokens     numeric NOT NULL DEFAULT 0 CHECK (per_1k_prompt_tokens >= 0),
    per_1k_completion_tokens numeric NOT NULL DEFAULT 0 CHECK (per_1k_completion_tokens >= 0),
    per_1k_tokens            numeric NOT NULL DEFAULT 0 CHECK (per_1k_tokens >= 0),
    per_mb                   numeric NOT NULL DEFAULT 0 CHECK (per_mb >= 0),
    PRIMARY KEY (kind, model, valid_from)
);

-- Records one usage event and returns its id. Without p_cost the price table decides:
-- per event + per 1k prompt/completion tokens + per 1k of the remaining tokens + per MB.
CREATE FUNCTION usage_record(
    p_user_id           bigint,
    p_kind              text,
    p_tokens            bigint  DEFAULT 0,
    p_prompt_tokens     bigint  DEFAULT 0,
    p_completion_tokens bigint  DEFAULT 0,
    p_messages          integer DEFAULT 0,
    p_bytes             bigint  DEFAULT 0,
    p_cost              numeric DEFAULT NULL,
    p_request_type      text    DEFAULT '',
    p_model             text    DEFAULT '',
    p_metadata          jsonb   DEFAULT '{}',
    p_created_at        timestamptz DEFAULT now()
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_tokens bigint := GREATEST(COALESCE(p_tokens, 0),
                                COALESCE(p_prompt_tokens, 0) + COALESCE(p_completion_tokens, 0));
    v_cost   numeric := p_cost;
    v_id     bigint;
BEGIN
    IF v_cost IS NULL THEN
        SELECT p.per_event
             + COALESCE(p_prompt_tokens, 0) * p.per_1k_prompt_tokens / 1000
             + COALESCE(p_completion_tokens, 0) * p.per_1k_completion_tokens / 1000
             + GREATEST(v_tokens - COALESCE(p_prompt_tokens, 0) - COALESCE(p_completion_tokens, 0), 0)
               * p.per_1k_tokens / 1000
             + COALESCE(p_bytes, 0) * p.per_mb / 1048576
          INTO v_cost
          FROM prices p
         WHERE p.kind = p_kind
           AND p.model IN (COALESCE(p_model, ''), '')
           AND p.valid_from <= p_created_at
         ORDER BY (p.model = '') ASC, p.valid_from DESC
         LIMIT 1;
    END IF;
    INSERT INTO usage_events (user_id, kind, request_type, model, tokens, prompt_tokens,
                              completion_tokens, messages, bytes, cost, metadata, created_at)
    VALUES (p_user_id, p_kind, COALESCE(p_request_type, ''), COALESCE(p_model, ''), v_tokens,
            COALESCE(p_prompt_tokens, 0), COALESCE(p_completion_tokens, 0), COALESCE(p_messages, 0),
            COALESCE(p_bytes, 0), COALESCE(v_cost, 0), COALESCE(p_metadata, '{}'), p_created_at)
    RETURNING id INTO v_id;
    RETURN v_id;
END;
$$;

-- The run ledger: one row per run of a job, whoever triggered it.
CREATE TABLE job_runs (
    id            bigserial PRIMARY KEY,
    job           text NOT NULL,
    trigger       text NOT NULL CHECK (trigger IN ('cron', 'catchup', 'manual')),
    scheduled_for timestamptz NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    status        text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'abandoned', 'skipped')),
    report        jsonb,
    error         text,
    host          text NOT NULL,
    pid           integer NOT NULL,
    user_id       bigint   -- a manual run limited to one user (e.g. a manual reset)
);
-- A cron tick (or its catch-up) runs at most once, however many daemons share the database.
-- An abandoned run (its daemon crashed) does not count, so catch-up can run the tick again.
CREATE UNIQUE INDEX job_runs_one_run_per_tick ON job_runs (job, scheduled_for)
    WHERE trigger IN ('cron', 'catchup') AND status <> 'abandoned';
CREATE INDEX job_runs_job_started_idx ON job_runs (job, started_at DESC);
CREATE INDEX job_runs_running_idx ON job_runs (job) WHERE status = 'running';

-- Every event whose recorded_xid is below `xid` has been aggregated. One row.
CREATE TABLE aggregation_watermark (
    id         boolean PRIMARY KEY DEFAULT true CHECK (id),
    xid        xid8 NOT NULL DEFAULT '0',
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO aggregation_watermark DEFAULT VALUES;
