//! The webhook channel of the alert outbox. Deciding adds one `webhook_deliveries` row per
//! (alert, endpoint) in the transaction that records the alert; delivering claims due rows
//! with a lease (as emails are), posts them through `ctx.webhooks` — one thread per endpoint,
//! after the emails, so a slow endpoint delays neither — and records each answer: 2xx
//! delivered; 5xx, 408, 429, timeouts and connection errors retried with the alerts' backoff;
//! other 4xx failed; `410 Gone` also disables the endpoint until its configuration changes.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{
    Array, BigInt, Bool, Double, Int2, Int4, Integer, Nullable, Numeric, Text, Timestamptz,
};
use serde_json::json;

use crate::config::{AlertChannel, WEBHOOK_EVENTS};
use crate::jobs::failover::record_surviving_failover;
use crate::jobs::{Ctx, JobError, RunOpts};
use crate::mail::webhook::{
    self, PostError, QuotaEventFacts, WebhookErrorClass, WebhookMessage, WebhookTarget,
};
use crate::subject::Subject;

mod overview;

pub(super) use overview::preview;
pub use overview::{OutcomeCount, outcome_counts};

const ENDPOINTS_SQL: &str = include_str!("../sql/webhooks_endpoints.sql");
const DECIDE_SQL: &str = include_str!("../sql/webhooks_decide.sql");
const EXPIRE_SQL: &str = include_str!("../sql/webhooks_expire.sql");
const CLAIM_SQL: &str = include_str!("../sql/webhooks_claim.sql");
const MARK_DELIVERED_SQL: &str = include_str!("../sql/webhooks_mark_delivered.sql");
const MARK_FAILED_SQL: &str = include_str!("../sql/webhooks_mark_failed.sql");
const SUPPRESS_SQL: &str = include_str!("../sql/webhooks_suppress.sql");
const DISABLE_ENDPOINT_SQL: &str = include_str!("../sql/webhooks_disable_endpoint.sql");

/// The configured endpoints, or none when `alerts.channels` leaves webhooks out.
fn targets(ctx: &Ctx) -> Result<Vec<WebhookTarget>, JobError> {
    if !ctx.settings.alerts.uses(AlertChannel::Webhook) {
        return Ok(Vec::new());
    }
    WebhookTarget::all(&ctx.settings.alerts).map_err(|e| JobError::Invalid(e.to_string()))
}

#[derive(QueryableByName)]
struct EndpointRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    endpoint_key: String,
}

/// Records the configured endpoints (enabling again one whose configuration changed).
fn sync_endpoints(
    conn: &mut PgConnection,
    targets: &[WebhookTarget],
) -> QueryResult<Vec<EndpointRow>> {
    let keys: Vec<&str> = targets.iter().map(|t| t.key.as_str()).collect();
    let hosts: Vec<&str> = targets.iter().map(|t| t.host.as_str()).collect();
    let hashes: Vec<&str> = targets.iter().map(|t| t.config_hash.as_str()).collect();
    diesel::sql_query(ENDPOINTS_SQL)
        .bind::<Array<Text>, _>(&keys)
        .bind::<Array<Text>, _>(&hosts)
        .bind::<Array<Text>, _>(&hashes)
        .load(conn)
}

/// Adds the deliveries of the alerts just decided at `now`; called inside the deciding
/// transaction. Without the email channel, those alerts are then recorded as `suppressed`
/// (nobody is emailed) while their webhooks go out.
pub(super) fn decide(
    ctx: &Ctx,
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    user_id: Option<i64>,
) -> Result<(), JobError> {
    let targets = targets(ctx)?;
    if !targets.is_empty() {
        let rows = sync_endpoints(conn, &targets)?;
        let mut ids = Vec::new();
        let mut keys = Vec::new();
        let mut wants = Vec::new();
        for target in &targets {
            if let Some(row) = rows.iter().find(|r| r.endpoint_key == target.key) {
                ids.push(row.id);
                keys.push(target.key.as_str());
                for event in WEBHOOK_EVENTS {
                    if target.endpoint.wants(event) {
                        wants.push(format!("{} {event}", row.id));
                    }
                }
            }
        }
        diesel::sql_query(DECIDE_SQL)
            .bind::<Timestamptz, _>(now)
            .bind::<Array<BigInt>, _>(&ids)
            .bind::<Array<Text>, _>(&keys)
            .bind::<Array<Text>, _>(&wants)
            .bind::<Nullable<BigInt>, _>(user_id)
            .execute(conn)?;
    }
    if !ctx.settings.alerts.uses(AlertChannel::Email) {
        diesel::sql_query(SUPPRESS_SQL)
            .bind::<Timestamptz, _>(now)
            .bind::<Nullable<BigInt>, _>(user_id)
            .execute(conn)?;
    }
    Ok(())
}

/// A claimed delivery with the alert its body describes.
#[derive(QueryableByName, Debug, Clone)]
struct ClaimedDelivery {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    webhook_id: String,
    #[diesel(sql_type = Int4)]
    attempts: i32,
    #[diesel(sql_type = Text)]
    endpoint_key: String,
    #[diesel(sql_type = BigInt)]
    user_id: i64,
    /// The organization whose quota it is; 0 for the user's own.
    #[diesel(sql_type = BigInt)]
    org_id: i64,
    #[diesel(sql_type = Text)]
    org_name: String,
    #[diesel(sql_type = Text)]
    metric: String,
    #[diesel(sql_type = Text)]
    period: String,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Timestamptz)]
    period_start: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    period_end: DateTime<Utc>,
    #[diesel(sql_type = Int2)]
    threshold: i16,
    #[diesel(sql_type = Numeric)]
    used_value: bigdecimal::BigDecimal,
    #[diesel(sql_type = Numeric)]
    limit_value: bigdecimal::BigDecimal,
    #[diesel(sql_type = Timestamptz)]
    decided_at: DateTime<Utc>,
    /// The zone the period was counted in as stored: the organization's for its alerts.
    #[diesel(sql_type = Text)]
    timezone: String,
    /// `quota`, or a credit alert's type.
    #[diesel(sql_type = Text)]
    alert: String,
    #[diesel(sql_type = BigInt)]
    grant_id: i64,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    projected_exhaustion: Option<DateTime<Utc>>,
}

impl ClaimedDelivery {
    fn message(&self) -> WebhookMessage {
        WebhookMessage {
            webhook_id: self.webhook_id.clone(),
            body: webhook::quota_event_body(&QuotaEventFacts {
                subject: Subject::of_row(self.user_id, self.org_id),
                subject_name: &self.org_name,
                metric: &self.metric,
                period: &self.period,
                kind: &self.kind,
                threshold: self.threshold,
                used: &self.used_value,
                limit: &self.limit_value,
                period_start: self.period_start,
                period_end: self.period_end,
                timezone: &self.timezone,
                decided_at: self.decided_at,
                alert: &self.alert,
                grant_id: self.grant_id,
                projected_exhaustion: self.projected_exhaustion,
            }),
        }
    }
}

/// What one run's webhook deliveries came to.
#[derive(Debug, Default)]
pub(super) struct WebhookTally {
    delivered: usize,
    retrying: usize,
    failed: usize,
    expired: usize,
    disabled_hosts: Vec<String>,
}

impl WebhookTally {
    pub(super) fn summary(&self) -> String {
        let mut text = format!(
            "webhooks: {} delivered, {} to retry, {} failed, {} expired",
            self.delivered, self.retrying, self.failed, self.expired
        );
        if !self.disabled_hosts.is_empty() {
            text.push_str(&format!(
                "; endpoint(s) disabled by 410 Gone: {}",
                self.disabled_hosts.join(", ")
            ));
        }
        text
    }

    pub(super) fn details(&self) -> serde_json::Value {
        json!({
            "delivered": self.delivered,
            "retrying": self.retrying,
            "failed": self.failed,
            "expired": self.expired,
            "disabled": self.disabled_hosts,
        })
    }
}

/// Expires overdue deliveries, then delivers due ones batch by batch. Called after the
/// emails went out.
pub(super) fn deliver(
    ctx: &Ctx,
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    opts: &RunOpts,
) -> Result<WebhookTally, JobError> {
    let settings = &ctx.settings.alerts;
    let mut tally = WebhookTally {
        expired: diesel::sql_query(EXPIRE_SQL)
            .bind::<Timestamptz, _>(now)
            .bind::<Double, _>(settings.expire_after.0.as_secs_f64())
            .bind::<Nullable<BigInt>, _>(opts.user_id)
            .execute(conn)?,
        ..WebhookTally::default()
    };
    let targets = targets(ctx)?;
    if targets.is_empty() {
        return Ok(tally);
    }
    sync_endpoints(conn, &targets)?;
    let keys: Vec<&str> = targets.iter().map(|t| t.key.as_str()).collect();
    loop {
        opts.cancel.check()?;
        let batch: Vec<ClaimedDelivery> = diesel::sql_query(CLAIM_SQL)
            .bind::<Timestamptz, _>(now)
            .bind::<Double, _>(settings.lease.0.as_secs_f64())
            .bind::<BigInt, _>(i64::from(settings.batch_size))
            .bind::<Array<Text>, _>(&keys)
            .bind::<Nullable<BigInt>, _>(opts.user_id)
            .load(conn)?;
        if batch.is_empty() {
            break;
        }
        let results = post_batch(ctx, &targets, &batch);
        record_surviving_failover(ctx, conn, "posted webhooks", |conn| {
            record(ctx, conn, now, &targets, &results, &mut tally)
        })?;
    }
    Ok(tally)
}

type Posted<'a> = (&'a ClaimedDelivery, Result<u16, PostError>);

/// Posts a claimed batch: one thread per endpoint, so a slow one delays no other.
fn post_batch<'a>(
    ctx: &Ctx,
    targets: &[WebhookTarget],
    batch: &'a [ClaimedDelivery],
) -> Vec<Posted<'a>> {
    let mut by_endpoint: BTreeMap<&str, Vec<&'a ClaimedDelivery>> = BTreeMap::new();
    for delivery in batch {
        by_endpoint
            .entry(delivery.endpoint_key.as_str())
            .or_default()
            .push(delivery);
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = by_endpoint
            .into_iter()
            .filter_map(|(key, deliveries)| {
                let target = targets.iter().find(|t| t.key == key)?;
                Some(scope.spawn(move || {
                    let messages: Vec<WebhookMessage> =
                        deliveries.iter().map(|d| d.message()).collect();
                    let results = ctx.webhooks.post_all(target, &messages);
                    deliveries.into_iter().zip(results).collect::<Vec<_>>()
                }))
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(posted) => posted,
                // A panic in a sender is a crash of the run: nothing is recorded.
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

/// Records the answers: delivered rows, failed attempts, and endpoints that answered 410.
fn record(
    ctx: &Ctx,
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    targets: &[WebhookTarget],
    posted: &[Posted<'_>],
    tally: &mut WebhookTally,
) -> Result<(), JobError> {
    let host = |key: &str| {
        targets
            .iter()
            .find(|t| t.key == key)
            .map_or("", |t| t.host.as_str())
    };
    let mut delivered: (Vec<i64>, Vec<i32>) = Default::default();
    let mut failures: Vec<(&ClaimedDelivery, &PostError)> = Vec::new();
    for (delivery, result) in posted {
        match result {
            Ok(status) => {
                tracing::info!(
                    webhook.host = host(&delivery.endpoint_key),
                    webhook.id = %delivery.webhook_id,
                    webhook.status = status,
                    user.id = delivery.user_id,
                    org.id = delivery.org_id,
                    alert.threshold = delivery.threshold,
                    "quota alert webhook delivered"
                );
                delivered.0.push(delivery.id);
                delivered.1.push(i32::from(*status));
            }
            Err(error) => {
                tracing::warn!(
                    webhook.host = host(&delivery.endpoint_key),
                    webhook.id = %delivery.webhook_id,
                    webhook.attempts = delivery.attempts,
                    user.id = delivery.user_id,
                    org.id = delivery.org_id,
                    error.class = error.class.as_str(),
                    error = %error.message,
                    "quota alert webhook not delivered"
                );
                failures.push((delivery, error));
            }
        }
    }
    if !delivered.0.is_empty() {
        tally.delivered += diesel::sql_query(MARK_DELIVERED_SQL)
            .bind::<Array<BigInt>, _>(&delivered.0)
            .bind::<Array<Integer>, _>(&delivered.1)
            .bind::<Timestamptz, _>(now)
            .execute(conn)?;
    }
    record_failures(ctx, conn, now, &failures, tally)?;
    for (delivery, _) in failures
        .iter()
        .filter(|(_, e)| e.class == WebhookErrorClass::Gone)
    {
        disable_endpoint(
            conn,
            now,
            &delivery.endpoint_key,
            host(&delivery.endpoint_key),
            tally,
        )?;
    }
    Ok(())
}

#[derive(QueryableByName)]
struct DeliveryStatus {
    #[diesel(sql_type = Text)]
    status: String,
}

fn record_failures(
    ctx: &Ctx,
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    failures: &[(&ClaimedDelivery, &PostError)],
    tally: &mut WebhookTally,
) -> Result<(), JobError> {
    if failures.is_empty() {
        return Ok(());
    }
    let settings = &ctx.settings.alerts;
    let ids: Vec<i64> = failures.iter().map(|(d, _)| d.id).collect();
    let classes: Vec<&str> = failures.iter().map(|(_, e)| e.class.as_str()).collect();
    let messages: Vec<&str> = failures.iter().map(|(_, e)| e.message.as_str()).collect();
    let permanent: Vec<bool> = failures
        .iter()
        .map(|(_, e)| e.class.is_permanent())
        .collect();
    let codes: Vec<Option<i32>> = failures
        .iter()
        .map(|(_, e)| e.status.map(i32::from))
        .collect();
    let outcomes: Vec<DeliveryStatus> = diesel::sql_query(MARK_FAILED_SQL)
        .bind::<Array<BigInt>, _>(&ids)
        .bind::<Array<Text>, _>(&classes)
        .bind::<Array<Text>, _>(&messages)
        .bind::<Array<Bool>, _>(&permanent)
        .bind::<Array<Nullable<Integer>>, _>(&codes)
        .bind::<Timestamptz, _>(now)
        .bind::<Integer, _>(i32::try_from(settings.max_attempts).unwrap_or(i32::MAX))
        .bind::<Double, _>(settings.backoff_base.0.as_secs_f64())
        .bind::<Double, _>(settings.backoff_max.0.as_secs_f64())
        .load(conn)?;
    tally.failed += outcomes.iter().filter(|o| o.status == "failed").count();
    tally.retrying += outcomes.iter().filter(|o| o.status == "pending").count();
    Ok(())
}

/// `410 Gone`: the endpoint is not called again until its URL or secrets change.
fn disable_endpoint(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    key: &str,
    host: &str,
    tally: &mut WebhookTally,
) -> Result<(), JobError> {
    let changed = diesel::sql_query(DISABLE_ENDPOINT_SQL)
        .bind::<Text, _>(key)
        .bind::<Timestamptz, _>(now)
        .bind::<Text, _>(format!("{host} answered 410 Gone"))
        .execute(conn)?;
    if changed > 0 {
        tracing::warn!(
            webhook.host = host,
            "webhook endpoint answered 410 Gone: disabled until its url or secrets change in the configuration"
        );
        tally.disabled_hosts.push(host.to_string());
    }
    Ok(())
}
