//! Delivering claimed alerts by email: compose each with its stable Message-ID, send the
//! batch through `ctx.mailer`, and record what became of every one.

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{
    Array, BigInt, Bool, Double, Int2, Int4, Integer, Nullable, Numeric, Text, Timestamptz,
};

use super::members::TopMembers;
use super::message_id::{AlertKey, alert_message_id};
use super::status::{AlertStatus, StatusRow};
use crate::format;
use crate::jobs::failover::record_surviving_failover;
use crate::jobs::{Ctx, JobError};
use crate::mail::content::{
    AlertFacts, OrganizationFacts, alert_content, credit_content, organization_content,
};
use crate::mail::templates::Templates;
use crate::mail::unsubscribe::Unsubscribe;
use crate::mail::{self, ErrorClass, OutgoingEmail, SendError};
use crate::redact::{mask_addresses, mask_email};

const MARK_SENT_SQL: &str = include_str!("../sql/alerts_mark_sent.sql");
const MARK_FAILED_SQL: &str = include_str!("../sql/alerts_mark_failed.sql");

/// A claimed alert with its recipient.
#[derive(QueryableByName, Debug, Clone)]
pub struct ClaimedAlert {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// The recipient.
    #[diesel(sql_type = BigInt)]
    pub user_id: i64,
    /// The organization whose quota it is; 0 for the recipient's own.
    #[diesel(sql_type = BigInt)]
    pub org_id: i64,
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
    /// The organization's name; empty for a personal alert.
    #[diesel(sql_type = Text)]
    pub org_name: String,
    /// The recipient's role in the organization now; empty for a personal alert.
    #[diesel(sql_type = Text)]
    pub role: String,
    /// The zone the period was counted in: `usage_timezone_or_utc` of the user's zone, or of
    /// the organization's for its alerts.
    #[diesel(sql_type = Text)]
    pub zone: String,
    /// The zone's offset from UTC at `period_end`, in seconds east, as PostgreSQL computes it.
    #[diesel(sql_type = Int4)]
    pub period_end_utc_offset: i32,
    /// `quota`, or a credit alert (`credit.low`, `credit.depleted`, `credit.recovered`).
    #[diesel(sql_type = Text)]
    pub alert: String,
    /// A credit alert's newest active grant; 0 for a quota alert.
    #[diesel(sql_type = BigInt)]
    pub grant_id: i64,
    /// When usage reaches the limit at the period's pace, as decided (quota alerts and
    /// forecasts); `None` when not before the period ends.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub projected_exhaustion: Option<DateTime<Utc>>,
    /// The zone's offset from UTC at `projected_exhaustion`, in seconds east (0 without one).
    #[diesel(sql_type = Int4)]
    pub projected_utc_offset: i32,
}

impl ClaimedAlert {
    fn key(&self) -> AlertKey<'_> {
        AlertKey {
            user_id: self.user_id,
            org_id: self.org_id,
            metric: &self.metric,
            period: &self.period,
            kind: &self.kind,
            period_start: self.period_start,
            threshold: self.threshold,
            alert: &self.alert,
            grant_id: self.grant_id,
        }
    }
}

#[derive(Default)]
pub(super) struct Delivery {
    pub(super) sent: usize,
    pub(super) retrying: usize,
    pub(super) failed: usize,
}

/// What every email of a run is composed with.
pub(super) struct Composer<'a> {
    pub(super) templates: &'a Templates,
    /// The one-click unsubscribe signer, when `mail.unsubscribe_url` is set.
    pub(super) unsubscribe: Option<&'a Unsubscribe>,
    pub(super) now: DateTime<Utc>,
}

/// Composes, sends and records one claimed batch. An alert that cannot be composed or sent
/// is recorded as a failed attempt, so it is retried or given up on like any failed send.
pub(super) fn deliver_batch(
    ctx: &Ctx,
    conn: &mut PgConnection,
    composer: &Composer<'_>,
    batch: &[ClaimedAlert],
    delivery: &mut Delivery,
) -> Result<(), JobError> {
    let now = composer.now;
    let top_members = TopMembers::load(conn, batch)?;
    let mut emails: Vec<OutgoingEmail> = Vec::with_capacity(batch.len());
    let mut email_alerts: Vec<&ClaimedAlert> = Vec::with_capacity(batch.len());
    let mut failures: Vec<(&ClaimedAlert, SendError)> = Vec::new();
    let domain = mail::sender_domain(&ctx.settings.mail);
    for alert in batch {
        match compose_email(ctx, composer, &domain, alert, &top_members) {
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
                    org.id = alert.org_id,
                    mail.to = %mask_email(&alert.email),
                    mail.message_id = %email.message_id,
                    alert.metric = %alert.metric,
                    alert.period = %alert.period,
                    alert.threshold = alert.threshold,
                    alert.type = %alert.alert,
                    "quota alert sent"
                );
                sent.push((alert, email));
            }
            Err(e) => failures.push((alert, e)),
        }
    }

    // The emails are out: their record must reach the database, a new primary included.
    record_surviving_failover(ctx, conn, "sent alerts", |conn| {
        delivery.sent += record_sent(conn, now, &sent)?;
        record_failures(ctx, conn, now, &failures, delivery)
    })
}

/// The alert email of one claimed alert, with its stable Message-ID.
fn compose_email(
    ctx: &Ctx,
    composer: &Composer<'_>,
    domain: &str,
    alert: &ClaimedAlert,
    top_members: &TopMembers,
) -> Result<OutgoingEmail, SendError> {
    let mail_settings = &ctx.settings.mail;
    let message_id = alert_message_id(&alert.key(), domain);
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
        projected: alert
            .projected_exhaustion
            .map(|at| format::local_time(at, alert.projected_utc_offset)),
    };
    let mut content = alert_content(
        &facts,
        mail_settings.upgrade_url.as_deref(),
        mail_settings.preferences_url.as_deref(),
    );
    content.forecast = alert.alert == mail::webhook::FORECAST_EVENT;
    if alert.alert.starts_with("credit.") {
        let low = u32::from(ctx.settings.alerts.credit_low_percent.get());
        content.credit = Some(credit_content(&facts, &alert.alert, low));
    }
    if alert.org_id != 0 {
        let org = OrganizationFacts {
            id: alert.org_id,
            name: alert.org_name.clone(),
            role: alert.role.clone(),
            recipient: alert.user_id,
            top_members: top_members.of(alert),
        };
        content.organization = Some(organization_content(&org, &alert.metric));
    }
    let rendered = composer
        .templates
        .render(&content)
        .map_err(|e| SendError::new(ErrorClass::Local, e.to_string()))?;
    mail::compose(
        mail_settings,
        &alert.email,
        &alert.name,
        &rendered,
        &message_id,
        composer.now,
        composer
            .unsubscribe
            .map(|u| u.link(alert.user_id, composer.now)),
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
            org.id = alert.org_id,
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
