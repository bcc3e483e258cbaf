//! `alerts`: the quota alert outbox. Each run first *decides* — one set-based insert of
//! every threshold that usage in an open period has reached, once per (user, metric,
//! period kind, event kind, period start, threshold) — then *delivers*: claims due rows
//! with a lease, sends them through `ctx.mailer`, and records the result. A failed send is
//! retried with exponential backoff until it is sent, fails for good or expires; a crash
//! between send and commit leads to at most one more delivery, with the same Message-ID.
//! Webhook endpoints get the same alerts through the same outbox (`webhooks`), after the emails.

use std::collections::BTreeMap;

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::pg::{Pg, PgConnection};
use diesel::prelude::*;
use diesel::sql_types::{
    Array, BigInt, Bool, Double, Int2, Int4, Integer, Nullable, Numeric, Text, Timestamptz,
};
use serde_json::json;

use super::{Ctx, JobError, JobReport, RunOpts};
use crate::config::{AlertChannel, Settings};
use crate::db::Count;
use crate::format;
use crate::mail::content::{AlertFacts, alert_content};
use crate::mail::templates::Templates;
use crate::mail::{self, ErrorClass, OutgoingEmail, SendError};
use crate::redact::{mask_addresses, mask_email};

pub mod message_id;
pub mod status;
pub mod webhooks;

pub use message_id::alert_message_id;
pub use status::AlertStatus;
use status::{StatusCount, StatusRow};

const CANDIDATES_SQL: &str = include_str!("sql/alerts_candidates.sql");
const DECIDE_SQL: &str = include_str!("sql/alerts_decide.sql");
const PREVIEW_SQL: &str = include_str!("sql/alerts_preview.sql");
const RETIRE_SQL: &str = include_str!("sql/alerts_retire.sql");
const CLAIM_SQL: &str = include_str!("sql/alerts_claim.sql");
const MARK_SENT_SQL: &str = include_str!("sql/alerts_mark_sent.sql");
const MARK_FAILED_SQL: &str = include_str!("sql/alerts_mark_failed.sql");

/// An alert the dry run would record.
#[derive(QueryableByName)]
struct Preview {
    #[diesel(sql_type = BigInt)]
    user_id: i64,
    #[diesel(sql_type = Text)]
    email: String,
    #[diesel(sql_type = Text)]
    metric: String,
    #[diesel(sql_type = Text)]
    period: String,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Timestamptz)]
    period_start: DateTime<Utc>,
    #[diesel(sql_type = Int2)]
    threshold: i16,
    #[diesel(sql_type = Numeric)]
    used_value: BigDecimal,
    #[diesel(sql_type = Numeric)]
    limit_value: BigDecimal,
    #[diesel(sql_type = Text)]
    status: AlertStatus,
}

/// A claimed alert with its addressee.
#[derive(QueryableByName, Debug, Clone)]
pub struct ClaimedAlert {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = BigInt)]
    pub user_id: i64,
    #[diesel(sql_type = Text)]
    pub metric: String,
    #[diesel(sql_type = Text)]
    pub period: String,
    #[diesel(sql_type = Text)]
    pub kind: String,
    #[diesel(sql_type = Timestamptz)]
    pub period_start: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub period_end: DateTime<Utc>,
    #[diesel(sql_type = Int2)]
    pub threshold: i16,
    #[diesel(sql_type = Numeric)]
    pub used_value: BigDecimal,
    #[diesel(sql_type = Numeric)]
    pub limit_value: BigDecimal,
    #[diesel(sql_type = Int4)]
    pub attempts: i32,
    #[diesel(sql_type = Text)]
    pub email: String,
    #[diesel(sql_type = Text)]
    pub name: String,
    /// The zone the period was counted in: `usage_timezone_or_utc(users.timezone)`.
    #[diesel(sql_type = Text)]
    pub zone: String,
    /// The zone's offset from UTC at `period_end`, in seconds east, as PostgreSQL computes it.
    #[diesel(sql_type = Int4)]
    pub period_end_utc_offset: i32,
}

/// The job as `--list-jobs` describes it, with the thresholds in effect.
pub fn description(settings: &Settings) -> String {
    let thresholds: Vec<String> = settings
        .alerts
        .thresholds
        .iter()
        .map(|t| format!("{t} %"))
        .collect();
    format!(
        "emails users past {} of a limit, once per threshold per period, retrying failed sends",
        thresholds.join("/")
    )
}

fn candidates_then(statement: &str) -> String {
    format!("WITH candidates AS ({CANDIDATES_SQL})\n{statement}")
}

/// Runs `statement` after the candidates it reads: $1 now, $2 thresholds int[],
/// $3 expire_after seconds, $4 a user id or NULL.
fn load_after_candidates<Row>(
    ctx: &Ctx,
    conn: &mut PgConnection,
    statement: &str,
    now: DateTime<Utc>,
    user_id: Option<i64>,
) -> QueryResult<Vec<Row>>
where
    Row: QueryableByName<Pg> + 'static,
{
    let settings = &ctx.settings.alerts;
    let thresholds: Vec<i32> = settings
        .thresholds
        .iter()
        .map(|t| i32::from(t.get()))
        .collect();
    diesel::sql_query(candidates_then(statement))
        .bind::<Timestamptz, _>(now)
        .bind::<Array<Integer>, _>(thresholds)
        .bind::<Double, _>(settings.expire_after.0.as_secs_f64())
        .bind::<Nullable<BigInt>, _>(user_id)
        .load(conn)
}

/// The deciding step alone: records every alert usage calls for at `now` (for one user, or
/// everyone), with its webhook deliveries in the same transaction; returns how many alerts
/// were inserted per status.
pub fn decide(
    ctx: &Ctx,
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    user_id: Option<i64>,
) -> Result<BTreeMap<AlertStatus, i64>, JobError> {
    conn.transaction(|conn| {
        let decided: Vec<StatusCount> = load_after_candidates(ctx, conn, DECIDE_SQL, now, user_id)?;
        webhooks::decide(ctx, conn, now, user_id)?;
        Ok(decided.into_iter().map(|c| (c.status, c.n)).collect())
    })
}

/// The deciding statement's text ($1 now, $2 thresholds int[], $3 expire_after seconds,
/// $4 a user id or NULL).
pub fn decide_sql() -> String {
    candidates_then(DECIDE_SQL)
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
    let expired = retired
        .iter()
        .filter(|s| s.status == AlertStatus::Expired)
        .count();
    let suppressed_later = retired.len() - expired;

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
        deliver_batch(ctx, conn, &templates, now, &batch, &mut delivery)?;
    }
    let hooks = webhooks::deliver(ctx, conn, now, opts)?;

    let decided_as = |status| decided.get(&status).copied().unwrap_or(0);
    let summary = format!(
        "decided {} alert(s) ({} to send, {} superseded, {} suppressed); sent {}, {} to retry, {} failed, {} expired (mail.transport = {}); {}",
        decided.values().sum::<i64>(),
        decided_as(AlertStatus::Pending),
        decided_as(AlertStatus::Superseded),
        decided_as(AlertStatus::Suppressed) + suppressed_later as i64,
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
            "expired": expired,
            "sent": delivery.sent,
            "retrying": delivery.retrying,
            "failed": delivery.failed,
            "transport": ctx.mailer.transport(),
            "webhooks": hooks.details(),
        }),
    ))
}

#[derive(Default)]
struct Delivery {
    sent: usize,
    retrying: usize,
    failed: usize,
}

/// Composes, sends and records one claimed batch. An alert that cannot be composed or sent
/// is recorded as a failed attempt, so it is retried or given up on like any failed send.
fn deliver_batch(
    ctx: &Ctx,
    conn: &mut PgConnection,
    templates: &Templates,
    now: DateTime<Utc>,
    batch: &[ClaimedAlert],
    delivery: &mut Delivery,
) -> Result<(), JobError> {
    let mut emails: Vec<OutgoingEmail> = Vec::with_capacity(batch.len());
    let mut email_alerts: Vec<&ClaimedAlert> = Vec::with_capacity(batch.len());
    let mut failures: Vec<(&ClaimedAlert, SendError)> = Vec::new();
    let domain = mail::sender_domain(&ctx.settings.mail);
    for alert in batch {
        match compose_email(ctx, templates, now, &domain, alert) {
            Ok(email) => {
                emails.push(email);
                email_alerts.push(alert);
            }
            Err(e) => failures.push((alert, e)),
        }
    }

    let results = ctx.mailer.send_all(&emails);
    let mut sent = Vec::new();
    for ((alert, email), result) in email_alerts.into_iter().zip(&emails).zip(results) {
        match result {
            Ok(()) => {
                tracing::info!(
                    user.id = alert.user_id,
                    mail.to = %mask_email(&alert.email),
                    mail.message_id = %email.message_id,
                    alert.metric = %alert.metric,
                    alert.period = %alert.period,
                    alert.threshold = alert.threshold,
                    "quota alert sent"
                );
                sent.push((alert, email));
            }
            Err(e) => failures.push((alert, e)),
        }
    }

    delivery.sent += record_sent(conn, now, &sent)?;
    record_failures(ctx, conn, now, &failures, delivery)
}

/// The alert email of one claimed alert, with its stable Message-ID.
fn compose_email(
    ctx: &Ctx,
    templates: &Templates,
    now: DateTime<Utc>,
    domain: &str,
    alert: &ClaimedAlert,
) -> Result<OutgoingEmail, SendError> {
    let mail_settings = &ctx.settings.mail;
    let message_id = alert_message_id(
        alert.user_id,
        &alert.metric,
        &alert.period,
        &alert.kind,
        alert.period_start,
        alert.threshold,
        domain,
    );
    let facts = AlertFacts {
        name: alert.name.clone(),
        zone: alert.zone.clone(),
        metric: alert.metric.clone(),
        period: alert.period.clone(),
        kind: alert.kind.clone(),
        threshold: u32::try_from(alert.threshold).unwrap_or(0),
        used: alert.used_value.clone(),
        limit: alert.limit_value.clone(),
        period_end: format::local_time(alert.period_end, alert.period_end_utc_offset),
    };
    let content = alert_content(
        &facts,
        mail_settings.upgrade_url.as_deref(),
        mail_settings.preferences_url.as_deref(),
    );
    let rendered = templates
        .render(&content)
        .map_err(|e| SendError::new(ErrorClass::Local, e.to_string()))?;
    mail::compose(
        mail_settings,
        &alert.email,
        &alert.name,
        &rendered,
        &message_id,
        now,
    )
}

/// Marks the sent alerts `sent` with their Message-IDs; returns how many rows changed.
fn record_sent(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    sent: &[(&ClaimedAlert, &OutgoingEmail)],
) -> Result<usize, JobError> {
    if sent.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = sent.iter().map(|(a, _)| a.id).collect();
    let message_ids: Vec<&str> = sent.iter().map(|(_, e)| e.message_id.as_str()).collect();
    Ok(diesel::sql_query(MARK_SENT_SQL)
        .bind::<Array<BigInt>, _>(&ids)
        .bind::<Array<Text>, _>(&message_ids)
        .bind::<Timestamptz, _>(now)
        .execute(conn)?)
}

/// Records failed attempts: each alert goes back to `pending` with a backoff, or to `failed`
/// when the error is permanent or `alerts.max_attempts` is reached.
fn record_failures(
    ctx: &Ctx,
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    failures: &[(&ClaimedAlert, SendError)],
    delivery: &mut Delivery,
) -> Result<(), JobError> {
    if failures.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = failures.iter().map(|(a, _)| a.id).collect();
    let classes: Vec<&str> = failures.iter().map(|(_, e)| e.class.as_str()).collect();
    // Error texts reach the log and `last_error` here, whatever transport built them.
    let messages: Vec<String> = failures
        .iter()
        .map(|(_, e)| mask_addresses(&e.message))
        .collect();
    let permanent: Vec<bool> = failures
        .iter()
        .map(|(_, e)| e.class.is_permanent())
        .collect();
    let settings = &ctx.settings.alerts;
    let outcomes: Vec<StatusRow> = diesel::sql_query(MARK_FAILED_SQL)
        .bind::<Array<BigInt>, _>(&ids)
        .bind::<Array<Text>, _>(&classes)
        .bind::<Array<Text>, _>(&messages)
        .bind::<Array<Bool>, _>(&permanent)
        .bind::<Timestamptz, _>(now)
        .bind::<Integer, _>(i32::try_from(settings.max_attempts).unwrap_or(i32::MAX))
        .bind::<Double, _>(settings.backoff_base.0.as_secs_f64())
        .bind::<Double, _>(settings.backoff_max.0.as_secs_f64())
        .load(conn)?;
    for (alert, error) in failures {
        tracing::warn!(
            user.id = alert.user_id,
            mail.to = %mask_email(&alert.email),
            alert.id = alert.id,
            alert.attempts = alert.attempts,
            error.class = error.class.as_str(),
            error = %mask_addresses(&error.message),
            "quota alert not delivered"
        );
    }
    let now_in = |status| outcomes.iter().filter(|o| o.status == status).count();
    delivery.failed += now_in(AlertStatus::Failed);
    delivery.retrying += now_in(AlertStatus::Pending);
    Ok(())
}

/// `--dry-run`: who would be emailed and why; changes nothing.
fn preview(
    ctx: &Ctx,
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    user_id: Option<i64>,
) -> Result<JobReport, JobError> {
    let candidates: Vec<Preview> = load_after_candidates(ctx, conn, PREVIEW_SQL, now, user_id)?;
    let due: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM quota_alerts
          WHERE ((status = 'pending' AND next_attempt_at <= $1)
                 OR (status = 'sending' AND leased_until <= $1))
            AND ($2::bigint IS NULL OR user_id = $2)",
    )
    .bind::<Timestamptz, _>(now)
    .bind::<Nullable<BigInt>, _>(user_id)
    .get_result(conn)?;
    let mut lines = Vec::new();
    for c in &candidates {
        let scope = if c.kind.is_empty() {
            String::new()
        } else {
            format!(" ({})", c.kind)
        };
        let what = format!(
            "{}% of {} {}{scope}: {} of {} in the period from {}",
            c.threshold,
            if c.period == "day" {
                "daily"
            } else {
                "monthly"
            },
            c.metric,
            mail::content::format_amount(&c.metric, &c.used_value),
            mail::content::format_amount(&c.metric, &c.limit_value),
            c.period_start.format("%Y-%m-%d %H:%MZ"),
        );
        let verdict = match c.status {
            AlertStatus::Pending => "would email",
            AlertStatus::Superseded => "would record as superseded (a higher threshold is sent)",
            _ => "would record as suppressed (alerts are off)",
        };
        lines.push(format!(
            "user {} {}: {verdict}: {what}",
            c.user_id,
            mask_email(&c.email)
        ));
    }
    let would_email = candidates
        .iter()
        .filter(|c| c.status == AlertStatus::Pending)
        .count();
    let (hook_lines, hooks_due) = webhooks::preview(ctx, conn, now, &candidates, user_id)?;
    let would_post = hook_lines.len();
    lines.extend(hook_lines);
    Ok(JobReport::new(
        format!(
            "would email {would_email} new alert(s) and record {} superseded/suppressed; {} recorded alert(s) due for delivery (mail.transport = {}); would send {would_post} webhook(s), {hooks_due} recorded webhook(s) due",
            candidates.len() - would_email,
            due.n,
            ctx.mailer.transport()
        ),
        json!({ "lines": lines, "would_email": would_email, "due": due.n, "would_post": would_post, "webhooks_due": hooks_due }),
    ))
}
