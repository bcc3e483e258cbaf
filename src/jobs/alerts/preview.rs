//! `--dry-run`: who would be emailed and why, and what is due; changes nothing.

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Int2, Nullable, Numeric, Text, Timestamptz};
use serde_json::json;

use super::status::AlertStatus;
use super::{PREVIEW_SQL, make_candidates, webhooks};
use crate::db::Count;
use crate::jobs::{Ctx, JobError, JobReport};
use crate::mail;
use crate::mail::templates::single_line;
use crate::redact::mask_email;

/// An alert the dry run would record.
#[derive(QueryableByName)]
pub(super) struct Preview {
    #[diesel(sql_type = BigInt)]
    pub(super) user_id: i64,
    #[diesel(sql_type = BigInt)]
    pub(super) org_id: i64,
    #[diesel(sql_type = Text)]
    email: String,
    #[diesel(sql_type = Text)]
    org_name: String,
    #[diesel(sql_type = Bool)]
    org_alerts_enabled: bool,
    #[diesel(sql_type = Text)]
    role: String,
    #[diesel(sql_type = Text)]
    pub(super) metric: String,
    #[diesel(sql_type = Text)]
    pub(super) period: String,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Timestamptz)]
    period_start: DateTime<Utc>,
    #[diesel(sql_type = Int2)]
    pub(super) threshold: i16,
    #[diesel(sql_type = Numeric)]
    pub(super) used_value: BigDecimal,
    #[diesel(sql_type = Numeric)]
    pub(super) limit_value: BigDecimal,
    #[diesel(sql_type = Text)]
    pub(super) status: AlertStatus,
    /// `quota`, `quota.forecast`, or a credit alert (`credit.low`, `credit.depleted`,
    /// `credit.recovered`).
    #[diesel(sql_type = Text)]
    pub(super) alert: String,
    /// Whether this alert's webhooks would go with it (one per organization's threshold).
    #[diesel(sql_type = Bool)]
    pub(super) carries_webhook: bool,
}

impl Preview {
    /// `user 1 a***@example.com`, or `org 7 (Acme) → owner user 3 o***@example.com`.
    fn recipient(&self) -> String {
        let user = format!("user {} {}", self.user_id, mask_email(&self.email));
        if self.org_id == 0 {
            return user;
        }
        let name = single_line(&self.org_name);
        let org = if name.is_empty() {
            format!("org {}", self.org_id)
        } else {
            format!("org {} ({name})", self.org_id)
        };
        format!("{org} → {} {user}", self.role)
    }

    fn verdict(&self) -> &'static str {
        match self.status {
            AlertStatus::Pending => "would email",
            AlertStatus::Superseded => "would record as superseded (a higher threshold is sent)",
            AlertStatus::Unsubscribed => {
                "would record as unsubscribed (this user's email preference leaves it out)"
            }
            _ if self.org_id == 0 => "would record as suppressed (alerts are off)",
            _ if !self.org_alerts_enabled => {
                "would record as suppressed (the organization's alerts are off)"
            }
            _ => "would record as suppressed (this user's alerts are off)",
        }
    }

    fn line(&self) -> String {
        let scope = if self.kind.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.kind)
        };
        let period = if self.period == "day" {
            "daily"
        } else {
            "monthly"
        };
        if self.alert == "quota.forecast" {
            return format!(
                "{}: {}: forecast of {period} {}{scope}: {} of {} in the period from {}, 100% within alerts.forecast_hours at this pace",
                self.recipient(),
                self.verdict(),
                self.metric,
                mail::content::format_amount(&self.metric, &self.used_value),
                mail::content::format_amount(&self.metric, &self.limit_value),
                self.period_start.format("%Y-%m-%d %H:%MZ"),
            );
        }
        if self.alert != "quota" {
            // A credit alert: what the grants gave of what they granted.
            return format!(
                "{}: {}: {} on {period} {}{scope}: grants gave {} of {}",
                self.recipient(),
                self.verdict(),
                self.alert,
                self.metric,
                mail::content::format_amount(&self.metric, &self.used_value),
                mail::content::format_amount(&self.metric, &self.limit_value),
            );
        }
        format!(
            "{}: {}: {}% of {period} {}{scope}: {} of {} in the period from {}",
            self.recipient(),
            self.verdict(),
            self.threshold,
            self.metric,
            mail::content::format_amount(&self.metric, &self.used_value),
            mail::content::format_amount(&self.metric, &self.limit_value),
            self.period_start.format("%Y-%m-%d %H:%MZ"),
        )
    }
}

pub(super) fn preview(
    ctx: &Ctx,
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    user_id: Option<i64>,
) -> Result<JobReport, JobError> {
    // Changes nothing: the candidates' table goes with the rolled back transaction.
    let candidates: Vec<Preview> = crate::db::rolled_back(conn, |conn| {
        make_candidates(ctx, conn, now, user_id)?;
        diesel::sql_query(PREVIEW_SQL).load(conn)
    })?;
    let due: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM quota_alerts
          WHERE ((status = 'pending' AND next_attempt_at <= $1)
                 OR (status = 'sending' AND leased_until <= $1))
            AND ($2::bigint IS NULL OR (user_id = $2 AND org_id = 0))",
    )
    .bind::<Timestamptz, _>(now)
    .bind::<Nullable<BigInt>, _>(user_id)
    .get_result(conn)?;
    let mut lines: Vec<String> = candidates.iter().map(Preview::line).collect();
    let would_email = candidates
        .iter()
        .filter(|c| c.status == AlertStatus::Pending)
        .count();
    let (hook_lines, hooks_due) = webhooks::preview(ctx, conn, now, &candidates, user_id)?;
    let would_post = hook_lines.len();
    lines.extend(hook_lines);
    Ok(JobReport::new(
        format!(
            "would email {would_email} new alert(s) and record {} superseded/suppressed/unsubscribed; {} recorded alert(s) due for delivery (mail.transport = {}); would send {would_post} webhook(s), {hooks_due} recorded webhook(s) due",
            candidates.len() - would_email,
            due.n,
            ctx.mailer.transport()
        ),
        json!({ "lines": lines, "would_email": would_email, "due": due.n, "would_post": would_post, "webhooks_due": hooks_due }),
    ))
}
