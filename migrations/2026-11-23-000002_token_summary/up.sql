-- The token summary: daily sums of usage events per user, local day, kind, request type and
-- model, kept by the `aggregate` job; and usage_summary() for applications.

-- One row per (user, local calendar day, kind, request_type, model). `day` is the date in the
-- user's time zone (users.timezone; an unknown zone or a missing user row counts as UTC).
-- Every event below aggregation_watermark.xid is counted here exactly once.
CREATE TABLE token_usage_daily (
    user_id           bigint  NOT NULL,
    day               date    NOT NULL,
    kind              text    NOT NULL,
    request_type      text    NOT NULL,
    model             text    NOT NULL,
    events            bigint  NOT NULL DEFAULT 0,
    tokens            bigint  NOT NULL DEFAULT 0,
    prompt_tokens     bigint  NOT NULL DEFAULT 0,
    completion_tokens bigint  NOT NULL DEFAULT 0,
    messages          bigint  NOT NULL DEFAULT 0,
    bytes             bigint  NOT NULL DEFAULT 0,
    cost              numeric NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, day, kind, request_type, model)
);
-- Whole-day reads across users: the stats job, exports of every user.
CREATE INDEX token_usage_daily_day_idx ON token_usage_daily (day);

-- The zone the summary uses for `tz`: tz itself when PostgreSQL knows it, else 'UTC'.
-- Called once per distinct zone of a batch, not per event (the exception block costs a
-- subtransaction). PARALLEL UNSAFE: a subtransaction cannot start inside a parallel worker.
CREATE FUNCTION usage_timezone_or_utc(tz text) RETURNS text
LANGUAGE plpgsql STABLE PARALLEL UNSAFE AS $$
BEGIN
    IF tz IS NULL OR tz = '' THEN
        RETURN 'UTC';
    END IF;
    PERFORM now() AT TIME ZONE tz;
    RETURN tz;
EXCEPTION WHEN invalid_parameter_value THEN
    RETURN 'UTC';
END;
$$;

-- Sums of one user's daily summary per day, ISO week (starting Monday), month or year, for
-- the local days from p_from to p_to inclusive. Periods without usage are left out.
-- `period_start` is the first day of the period even when the range starts later (a week
-- beginning before p_from reports its Monday but sums only the days within the range).
CREATE FUNCTION usage_summary(p_user_id bigint, p_granularity text, p_from date, p_to date)
RETURNS TABLE (period_start date, events bigint, tokens bigint, prompt_tokens bigint,
               completion_tokens bigint, messages bigint, bytes bigint, cost numeric)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_granularity IS NULL OR p_granularity NOT IN ('day', 'week', 'month', 'year') THEN
        RAISE EXCEPTION 'unknown granularity "%"; expected day, week, month or year', p_granularity
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    SELECT date_trunc(p_granularity, d.day::timestamp)::date,
           sum(d.events)::bigint, sum(d.tokens)::bigint, sum(d.prompt_tokens)::bigint,
           sum(d.completion_tokens)::bigint, sum(d.messages)::bigint, sum(d.bytes)::bigint,
           sum(d.cost)
      FROM token_usage_daily d
     WHERE d.user_id = p_user_id
       AND d.day BETWEEN p_from AND p_to
     GROUP BY 1
     ORDER BY 1;
END;
$$;
