//! `alerts`: the quota alert outbox. Each run first *decides* — one set-based insert of
//! every threshold that usage in an open period has reached, once per (recipient,
//! organization, metric, period kind, event kind, period start, threshold): a user's own
//! quota alerts the user, an organization's alerts each of its owners and admins — then
//! *delivers*: claims due rows with a lease, sends them through `ctx.mailer`, and records the
//! result. A failed send is retried with exponential backoff until it is sent, fails for good
//! or expires; a crash between send and commit leads to at most one more delivery, with the
//! same Message-ID. Webhook endpoints get the same alerts through the same outbox
//! (`webhooks`), after the emails.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bytea, Double, Integer, Nullable, Text, Timestamptz};
use serde_json::json;

use super::{Ctx, JobError, JobReport, RunOpts};
use crate::config::{AlertChannel, Settings};
use crate::mail::templates::Templates;
use crate::mail::unsubscribe::Unsubscribe;

mod delivery;
mod members;
pub mod message_id;
mod preview;
pub mod status;
pub mod webhooks;

pub use delivery::ClaimedAlert;
use delivery::{Composer, Delivery, deliver_batch};
pub use message_id::{AlertKey, alert_message_id};
use preview::{Preview, preview};
pub use status::AlertStatus;
use status::{StatusCount, StatusRow};

const CANDIDATES_SQL: &str = include_str!("sql/alerts_candidates.sql");
const CREDIT_CANDIDATES_SQL: &str = include_str!("sql/alerts_credit_candidates.sql");
const DECIDE_SQL: &str = include_str!("sql/alerts_decide.sql");
const PREVIEW_SQL: &str = include_str!("sql/alerts_preview.sql");
const RETIRE_SQL: &str = include_str!("sql/alerts_retire.sql");
const CLAIM_SQL: &str = include_str!("sql/alerts_claim.sql");
const REGISTER_KEY_SQL: &str = include_str!("sql/unsubscribe_register_key.sql");

/// The job as `--list-jobs` describes it, with the thresholds in effect.
pub fn description(settings: &Settings) -> String {
    let thresholds: Vec<String> = settings
        .alerts
        .thresholds
        .iter()
        .map(|t| format!("{t} %"))
        .collect();
    format!(
        "emails users (and organizations' owners and admins) past {} of a limit, once per threshold per period, retrying failed sends",
        thresholds.join("/")
    )
}

/// Makes `alert_candidates` (alerts_candidates.sql, then the credit alerts of
/// alerts_credit_candidates.sql), which the deciding statement and the dry run read: $1 now,
/// $2 thresholds int[], $3 expire_after seconds, $4 a user id (that user's personal quota) or
/// NULL, $5 alerts.forecast_hours in seconds or NULL. Inside a transaction: the table goes at
/// its end.
fn make_candidates(
    ctx: &Ctx,
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    user_id: Option<i64>,
) -> QueryResult<usize> {
    let settings = &ctx.settings.alerts;
    let thresholds: Vec<i32> = settings
        .thresholds
        .iter()
        .map(|t| i32::from(t.get()))
        .collect();
    diesel::sql_query("DROP TABLE IF EXISTS alert_candidates").execute(conn)?;
    let quota = diesel::sql_query(CANDIDATES_SQL)
        .bind::<Timestamptz, _>(now)
        .bind::<Array<Integer>, _>(thresholds)
        .bind::<Double, _>(settings.expire_after.0.as_secs_f64())
        .bind::<Nullable<BigInt>, _>(user_id)
        .bind::<Nullable<Double>, _>(settings.forecast_seconds())
        .execute(conn)?;
    let credit = diesel::sql_query(CREDIT_CANDIDATES_SQL)
        .bind::<Timestamptz, _>(now)
        .bind::<Integer, _>(i32::from(settings.credit_low_percent.get()))
        .bind::<Nullable<BigInt>, _>(user_id)
        .execute(conn)?;
    Ok(quota + credit)
}

/// The deciding step alone: records every alert usage calls for at `now` (for one user's
/// personal quota, or everyone's and every organization's), with its webhook deliveries in the same transaction; returns how many alerts
/// were inserted per status.
pub fn decide(
    ctx: &Ctx,
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    user_id: Option<i64>,
) -> Result<BTreeMap<AlertStatus, i64>, JobError> {
    conn.transaction(|conn| {
        make_candidates(ctx, conn, now, user_id)?;
        let decided: Vec<StatusCount> = diesel::sql_query(DECIDE_SQL)
            .bind::<Timestamptz, _>(now)
            .load(conn)?;
        webhooks::decide(ctx, conn, now, user_id)?;
        Ok(decided.into_iter().map(|c| (c.status, c.n)).collect())
    })
}

/// The deciding statements' text, in order: the candidates ($1 now, $2 thresholds int[],
/// $3 expire_after seconds, $4 a user id or NULL, $5 forecast seconds or NULL), then the
/// insert of the alerts ($1 now).
pub const DECIDE_STATEMENTS: [&str; 2] = [CANDIDATES_SQL, DECIDE_SQL];

/// The one-click unsubscribe signer when `mail.unsubscribe_url` is set, its key registered
/// first: before any email names the key, the database must be able to verify it.
fn register_unsubscribe_key(
    ctx: &Ctx,
    conn: &mut PgConnection,
) -> Result<Option<Unsubscribe>, JobError> {
    let unsubscribe = Unsubscribe::from_settings(&ctx.settings.mail)
        .map_err(|e| JobError::Invalid(e.to_string()))?;
    if let Some(unsubscribe) = &unsubscribe {
        let (key_id, signing_key) = unsubscribe.key();
        diesel::sql_query(REGISTER_KEY_SQL)
            .bind::<Text, _>(key_id)
            .bind::<Bytea, _>(signing_key)
            .execute(conn)?;
    }
    Ok(unsubscribe)
}

pub fn run(
    ctx: &Ctx,
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    opts: &RunOpts,
) -> Result<JobReport, JobError> {
    let templates = Templates::load(ctx.settings.mail.templates_dir.as_deref())
        .map_err(|e| JobError::Invalid(format!("mail.templates_dir: {e}")))?;
    if opts.dry_run {
        return preview(ctx, conn, now, opts.user_id);
    }
    let settings = &ctx.settings.alerts;
    let expire_after = settings.expire_after.0.as_secs_f64();

    let decided = decide(ctx, conn, now, opts.user_id)?;

    let retired: Vec<StatusRow> = diesel::sql_query(RETIRE_SQL)
        .bind::<Timestamptz, _>(now)
        .bind::<Double, _>(expire_after)
        .bind::<Nullable<BigInt>, _>(opts.user_id)
        .load(conn)?;
    let retired_as = |status| retired.iter().filter(|s| s.status == status).count();
    let expired = retired_as(AlertStatus::Expired);
    let unsubscribed_later = retired_as(AlertStatus::Unsubscribed);
    let suppressed_later = retired.len() - expired - unsubscribed_later;

    let unsubscribe = register_unsubscribe_key(ctx, conn)?;
    let composer = Composer {
        templates: &templates,
        unsubscribe: unsubscribe.as_ref(),
        now,
    };
    let mut delivery = Delivery::default();
    // Emails first: a slow webhook endpoint never holds them up.
    while ctx.settings.alerts.uses(AlertChannel::Email) {
        opts.cancel.check()?;
        let batch: Vec<ClaimedAlert> = diesel::sql_query(CLAIM_SQL)
            .bind::<Timestamptz, _>(now)
            .bind::<Double, _>(settings.lease.0.as_secs_f64())
            .bind::<BigInt, _>(i64::from(settings.batch_size))
            .bind::<Nullable<BigInt>, _>(opts.user_id)
            .load(conn)?;
        if batch.is_empty() {
            break;
        }
        deliver_batch(ctx, conn, &composer, &batch, &mut delivery)?;
    }
    let hooks = webhooks::deliver(ctx, conn, now, opts)?;

    let decided_as = |status| decided.get(&status).copied().unwrap_or(0);
    let summary = format!(
        "decided {} alert(s) ({} to send, {} superseded, {} suppressed, {} unsubscribed); sent {}, {} to retry, {} failed, {} expired (mail.transport = {}); {}",
        decided.values().sum::<i64>(),
        decided_as(AlertStatus::Pending),
        decided_as(AlertStatus::Superseded),
        decided_as(AlertStatus::Suppressed) + suppressed_later as i64,
        decided_as(AlertStatus::Unsubscribed) + unsubscribed_later as i64,
        delivery.sent,
        delivery.retrying,
        delivery.failed,
        expired,
        ctx.mailer.transport(),
        hooks.summary(),
    );
    Ok(JobReport::new(
        summary,
        json!({
            "decided": decided,
            "suppressed_since_decided": suppressed_later,
            "unsubscribed_since_decided": unsubscribed_later,
            "expired": expired,
            "sent": delivery.sent,
            "retrying": delivery.retrying,
            "failed": delivery.failed,
            "transport": ctx.mailer.transport(),
            "webhooks": hooks.details(),
        }),
    ))
}
