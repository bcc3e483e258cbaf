// @generated automatically by Diesel CLI.

pub mod sql_types {
    #[derive(diesel::query_builder::QueryId, Clone, diesel::sql_types::SqlType)]
    #[diesel(postgres_type(name = "xid8", schema = "pg_catalog"))]
    pub struct Xid8;
}

diesel::table! {
    use diesel::sql_types::*;
    use super::sql_types::Xid8;

    aggregation_watermark (id) {
        id -> Bool,
        xid -> Xid8,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    job_runs (id) {
        id -> Int8,
        job -> Text,
        trigger -> Text,
        scheduled_for -> Timestamptz,
        started_at -> Timestamptz,
        finished_at -> Nullable<Timestamptz>,
        status -> Text,
        report -> Nullable<Jsonb>,
        error -> Nullable<Text>,
        host -> Text,
        pid -> Int4,
        user_id -> Nullable<Int8>,
    }
}

diesel::table! {
    organization_members (org_id, user_id) {
        org_id -> Int8,
        user_id -> Int8,
        role -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    organizations (id) {
        id -> Int8,
        name -> Text,
        timezone -> Text,
        plan_id -> Nullable<Int8>,
        billing_anchor_day -> Nullable<Int2>,
        alerts_enabled -> Bool,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    plan_limits (plan_id, metric, period, kind) {
        plan_id -> Int8,
        metric -> Text,
        period -> Text,
        kind -> Text,
        max_value -> Numeric,
    }
}

diesel::table! {
    plans (id) {
        id -> Int8,
        name -> Text,
        created_at -> Timestamptz,
        alert_thresholds -> Nullable<Array<Nullable<Int2>>>,
    }
}

diesel::table! {
    prices (kind, model, valid_from) {
        kind -> Text,
        model -> Text,
        valid_from -> Timestamptz,
        per_event -> Numeric,
        per_1k_prompt_tokens -> Numeric,
        per_1k_completion_tokens -> Numeric,
        per_1k_tokens -> Numeric,
        per_mb -> Numeric,
    }
}

diesel::table! {
    quota_alerts (id) {
        id -> Int8,
        user_id -> Int8,
        org_id -> Int8,
        metric -> Text,
        period -> Text,
        kind -> Text,
        period_start -> Timestamptz,
        period_end -> Timestamptz,
        threshold -> Int2,
        used_value -> Numeric,
        limit_value -> Numeric,
        status -> Text,
        attempts -> Int4,
        next_attempt_at -> Timestamptz,
        leased_until -> Nullable<Timestamptz>,
        last_error -> Nullable<Text>,
        error_class -> Nullable<Text>,
        message_id -> Nullable<Text>,
        decided_at -> Timestamptz,
        sent_at -> Nullable<Timestamptz>,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    token_usage_daily (user_id, day, kind, request_type, model, org_key) {
        user_id -> Int8,
        day -> Date,
        kind -> Text,
        request_type -> Text,
        model -> Text,
        events -> Int8,
        tokens -> Int8,
        prompt_tokens -> Int8,
        completion_tokens -> Int8,
        messages -> Int8,
        bytes -> Int8,
        cost -> Numeric,
        org_id -> Nullable<Int8>,
        org_key -> Int8,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use super::sql_types::Xid8;

    usage_events (id, created_at) {
        id -> Int8,
        user_id -> Int8,
        kind -> Text,
        request_type -> Text,
        model -> Text,
        tokens -> Int8,
        prompt_tokens -> Int8,
        completion_tokens -> Int8,
        messages -> Int4,
        bytes -> Int8,
        cost -> Numeric,
        metadata -> Jsonb,
        created_at -> Timestamptz,
        recorded_xid -> Xid8,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use super::sql_types::Xid8;

    usage_events_default (id, created_at) {
        id -> Int8,
        user_id -> Int8,
        kind -> Text,
        request_type -> Text,
        model -> Text,
        tokens -> Int8,
        prompt_tokens -> Int8,
        completion_tokens -> Int8,
        messages -> Int4,
        bytes -> Int8,
        cost -> Numeric,
        metadata -> Jsonb,
        created_at -> Timestamptz,
        recorded_xid -> Xid8,
        org_id -> Nullable<Int8>,
    }
}

diesel::table! {
    usage_idempotency_keys (org_id, scope_user_id, idempotency_key) {
        org_id -> Int8,
        user_id -> Int8,
        scope_user_id -> Int8,
        idempotency_key -> Text,
        event_id -> Int8,
        event_created_at -> Timestamptz,
        recorded_at -> Timestamptz,
    }
}

diesel::table! {
    usage_period_kind_totals (user_id, org_id, period, period_start, kind) {
        user_id -> Int8,
        org_id -> Int8,
        period -> Text,
        period_start -> Timestamptz,
        kind -> Text,
        requests -> Int8,
        messages -> Int8,
        tokens -> Int8,
        bytes -> Int8,
        cost -> Numeric,
    }
}

diesel::table! {
    usage_periods (user_id, org_id, period, period_start) {
        user_id -> Int8,
        org_id -> Int8,
        period -> Text,
        period_start -> Timestamptz,
        period_end -> Timestamptz,
        status -> Text,
        close_reason -> Nullable<Text>,
        requests -> Int8,
        messages -> Int8,
        tokens -> Int8,
        bytes -> Int8,
        cost -> Numeric,
        opened_at -> Timestamptz,
        closed_at -> Nullable<Timestamptz>,
        plan_id -> Nullable<Int8>,
        limits -> Nullable<Jsonb>,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use super::sql_types::Xid8;

    usage_quarantine (event_id, created_at) {
        event_id -> Int8,
        created_at -> Timestamptz,
        user_id -> Int8,
        org_id -> Nullable<Int8>,
        recorded_xid -> Xid8,
        reason -> Text,
        detail -> Text,
        quarantined_at -> Timestamptz,
    }
}

diesel::table! {
    usage_settings (singleton) {
        singleton -> Bool,
        idempotency_days -> Int4,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    users (id) {
        id -> Int8,
        email -> Text,
        name -> Text,
        timezone -> Text,
        plan_id -> Nullable<Int8>,
        billing_anchor_day -> Nullable<Int2>,
        alerts_enabled -> Bool,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    webhook_deliveries (id) {
        id -> Int8,
        alert_id -> Int8,
        endpoint_id -> Int8,
        event_type -> Text,
        webhook_id -> Text,
        status -> Text,
        attempts -> Int4,
        next_attempt_at -> Timestamptz,
        leased_until -> Nullable<Timestamptz>,
        last_status_code -> Nullable<Int2>,
        error_class -> Nullable<Text>,
        last_error -> Nullable<Text>,
        delivered_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    webhook_endpoints (id) {
        id -> Int8,
        endpoint_key -> Text,
        host -> Text,
        config_hash -> Text,
        disabled_at -> Nullable<Timestamptz>,
        disabled_reason -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::joinable!(plan_limits -> plans (plan_id));
diesel::joinable!(organization_members -> organizations (org_id));
diesel::joinable!(organization_members -> users (user_id));
diesel::joinable!(organizations -> plans (plan_id));
diesel::joinable!(quota_alerts -> users (user_id));
diesel::joinable!(users -> plans (plan_id));
diesel::joinable!(webhook_deliveries -> quota_alerts (alert_id));
diesel::joinable!(webhook_deliveries -> webhook_endpoints (endpoint_id));

diesel::allow_tables_to_appear_in_same_query!(
    aggregation_watermark,
    job_runs,
    organization_members,
    organizations,
    plan_limits,
    plans,
    prices,
    quota_alerts,
    token_usage_daily,
    usage_events,
    usage_events_default,
    usage_idempotency_keys,
    usage_period_kind_totals,
    usage_periods,
    usage_quarantine,
    usage_settings,
    users,
    webhook_deliveries,
    webhook_endpoints,
);
