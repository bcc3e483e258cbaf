//! `usage-worker --usage USER_ID [--json]`: one user's quota state as `quota_status()` returns
//! it, as a table with a bar per limit or as JSON for scripts; `--usage --org ORG_ID`: an
//! organization's shared quota (`org_quota_status()`) and the members who used the most of it
//! this month; both with the subject's grants (balance and expiry). Reset instants are shown on the subject's clock as PostgreSQL computed the
//! periods: in the zone it counted in, at the offset it gives that zone, so any zone spelling
//! it accepts (`europe/berlin`, `UTC+3`) is shown as counted.

mod grants;
mod members;

use std::fmt::Write as _;

use bigdecimal::{BigDecimal, ToPrimitive, Zero};
use chrono::{DateTime, FixedOffset, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Int4, Nullable, Numeric, Text, Timestamptz};
use serde_json::{Value, json};

use crate::format;
use crate::subject::Subject;

const SUBJECT_SQL: &str = include_str!("quota_report/sql/subject.sql");
const STATUS_SQL: &str = include_str!("quota_report/sql/status.sql");

pub use members::{MemberUsage, OrgMembers};

/// One row of `quota_status(user_id)` or `org_quota_status(org_id)`.
#[derive(Debug, Clone, QueryableByName)]
pub struct QuotaRow {
    #[diesel(sql_type = Text)]
    pub metric: String,
    #[diesel(sql_type = Text)]
    pub period: String,
    #[diesel(sql_type = Text)]
    pub kind: String,
    #[diesel(sql_type = Numeric)]
    pub used: BigDecimal,
    #[diesel(sql_type = Nullable<Numeric>)]
    pub limit_value: Option<BigDecimal>,
    #[diesel(sql_type = Nullable<Numeric>)]
    pub remaining: Option<BigDecimal>,
    #[diesel(sql_type = Bool)]
    pub unlimited: bool,
    #[diesel(sql_type = Bool)]
    pub exceeded: bool,
    #[diesel(sql_type = Nullable<Numeric>)]
    pub percent: Option<BigDecimal>,
    #[diesel(sql_type = Timestamptz)]
    pub period_start: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub period_end: DateTime<Utc>,
    #[diesel(sql_type = Numeric)]
    pub granted: BigDecimal,
    #[diesel(sql_type = Numeric)]
    pub grant_remaining: BigDecimal,
    /// The zone's offset from UTC at `period_end`, in seconds east (not a `quota_status()`
    /// column: computed beside it, in the zone the periods were counted in).
    #[diesel(sql_type = Int4)]
    pub period_end_utc_offset: i32,
    /// When the limit is reached at the period's pace so far (`quota_status()`'s column).
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub projected_exhaustion: Option<DateTime<Utc>>,
    /// The zone's offset from UTC at `projected_exhaustion`, in seconds east (0 without one).
    #[diesel(sql_type = Int4)]
    pub projected_utc_offset: i32,
}

/// A user's or an organization's quota state at one instant.
#[derive(Debug, Clone)]
pub struct QuotaReport {
    pub subject: Subject,
    /// The organization's name (empty for a user: the table does not show users' names).
    pub name: String,
    /// The zone as stored in `users.timezone` or `organizations.timezone`.
    pub timezone: String,
    /// The zone the periods are computed in: `usage_timezone_or_utc(timezone)`, i.e. the
    /// stored one, or `UTC` when PostgreSQL does not know it.
    pub zone: String,
    pub plan: Option<String>,
    pub at: DateTime<Utc>,
    /// The zone's offset from UTC at `at`, in seconds east.
    pub at_utc_offset: i32,
    pub rows: Vec<QuotaRow>,
    /// An organization's members with the most usage in its current month; `None` for a user.
    pub members: Option<OrgMembers>,
    /// The subject's grants still usable at `at`, earliest expiry first.
    pub grants: Vec<grants::GrantRow>,
    /// A user's alert emails in effect (`all`, `quota`, `credit`, `none`); `None` for an
    /// organization.
    pub alert_emails: Option<String>,
}

#[derive(QueryableByName)]
struct SubjectInfo {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    timezone: String,
    #[diesel(sql_type = Text)]
    zone: String,
    #[diesel(sql_type = Int4)]
    at_utc_offset: i32,
    #[diesel(sql_type = Nullable<Text>)]
    plan: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    alert_emails: Option<String>,
}

/// Reads the quota state of `subject`; `None` when it is not in its table.
pub fn load_report(
    conn: &mut PgConnection,
    subject: Subject,
    at: DateTime<Utc>,
) -> QueryResult<Option<QuotaReport>> {
    match subject {
        Subject::User(id) => load(conn, id, at),
        Subject::Org(id) => load_org(conn, id, at),
    }
}

/// Reads the user's quota state; `None` when the user is not in `users`.
pub fn load(
    conn: &mut PgConnection,
    user_id: i64,
    at: DateTime<Utc>,
) -> QueryResult<Option<QuotaReport>> {
    load_subject(conn, Subject::User(user_id), at)
}

/// Reads an organization's quota state and its top members this month; `None` when the
/// organization is not in `organizations`.
pub fn load_org(
    conn: &mut PgConnection,
    org_id: i64,
    at: DateTime<Utc>,
) -> QueryResult<Option<QuotaReport>> {
    let Some(mut report) = load_subject(conn, Subject::Org(org_id), at)? else {
        return Ok(None);
    };
    report.members = members::load_top(conn, org_id, &report.zone, &report.rows)?;
    Ok(Some(report))
}

fn load_subject(
    conn: &mut PgConnection,
    subject: Subject,
    at: DateTime<Utc>,
) -> QueryResult<Option<QuotaReport>> {
    let (user_id, org_id) = subject.key();
    let info: Option<SubjectInfo> = diesel::sql_query(SUBJECT_SQL)
        .bind::<BigInt, _>(user_id)
        .bind::<BigInt, _>(org_id)
        .bind::<Timestamptz, _>(at)
        .get_result(conn)
        .optional()?;
    let Some(info) = info else {
        return Ok(None);
    };
    let rows: Vec<QuotaRow> = diesel::sql_query(STATUS_SQL)
        .bind::<BigInt, _>(user_id)
        .bind::<BigInt, _>(org_id)
        .bind::<Timestamptz, _>(at)
        .bind::<Text, _>(&info.zone)
        .load(conn)?;
    let grants = grants::load(conn, (user_id, org_id), at, &info.zone)?;
    Ok(Some(QuotaReport {
        subject,
        name: info.name,
        timezone: info.timezone,
        zone: info.zone,
        plan: info.plan,
        at,
        at_utc_offset: info.at_utc_offset,
        rows,
        members: None,
        grants,
        alert_emails: info.alert_emails,
    }))
}

const BAR_WIDTH: usize = 20;

impl QuotaReport {
    fn label(row: &QuotaRow) -> String {
        if row.kind.is_empty() {
            format!("{}/{}", row.metric, row.period)
        } else {
            format!("{}/{} [{}]", row.metric, row.period, row.kind)
        }
    }

    fn resets_local(row: &QuotaRow) -> DateTime<FixedOffset> {
        format::local_time(row.period_end, row.period_end_utc_offset)
    }

    /// `user 42` or `organization 7 "Acme"`.
    fn heading(&self) -> String {
        match self.subject {
            Subject::User(id) => format!("user {id}"),
            Subject::Org(id) => format!("organization {id} {:?}", self.name),
        }
    }

    /// The readable table: a bar per limit, usage and the reset instant in the subject's zone;
    /// for an organization, then its top members.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let zone_note = if self.zone == self.timezone {
            self.timezone.clone()
        } else {
            format!("UTC (unknown time zone `{}`)", self.timezone)
        };
        let at = format::local_time(self.at, self.at_utc_offset);
        let emails = self
            .alert_emails
            .as_deref()
            .map(|e| format!("  alert emails {}", alert_emails_words(e)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{}  plan {}  zone {}  at {} {}{emails}",
            self.heading(),
            self.plan.as_deref().unwrap_or("(none)"),
            zone_note,
            at.format("%Y-%m-%d %H:%M:%S"),
            format::zone_abbreviation(&self.zone, &at)
        );
        let width = self
            .rows
            .iter()
            .map(|r| Self::label(r).chars().count())
            .max()
            .unwrap_or(0);
        for row in &self.rows {
            let label = Self::label(row);
            let resets = format!(
                "resets {} {}",
                Self::resets_local(row).format("%Y-%m-%d %H:%M"),
                self.zone
            );
            match &row.limit_value {
                None => {
                    let _ = writeln!(
                        out,
                        "{label:<width$}  {:<w$}  {:>4}  {} used  {resets}",
                        "unlimited",
                        "",
                        format_amount(&row.metric, &row.used),
                        w = BAR_WIDTH,
                    );
                }
                Some(limit) => {
                    let percent = row.percent.as_ref().and_then(|p| p.to_f64()).unwrap_or(0.0);
                    let _ = writeln!(
                        out,
                        "{label:<width$}  {}  {:>4}  {} / {}{}  {resets}",
                        bar(percent),
                        format!("{}%", percent.floor() as i64),
                        format_amount(&row.metric, &row.used),
                        format_amount(&row.metric, limit),
                        Self::credit_note(row),
                    );
                    if let Some(at) = Self::projected_local(row) {
                        let _ = writeln!(
                            out,
                            "{:<width$}  at this pace 100% on {} {}",
                            "",
                            at.format("%Y-%m-%d %H:%M"),
                            self.zone
                        );
                    }
                }
            }
        }
        grants::write_table(&mut out, &self.grants, self.at, &self.zone);
        if let Some(members) = &self.members {
            members.write_table(&mut out, &self.zone);
        }
        out
    }

    /// The projected exhaustion on the subject's clock, while the limit is not reached yet.
    fn projected_local(row: &QuotaRow) -> Option<DateTime<FixedOffset>> {
        let limit = row.limit_value.as_ref()?;
        if &row.used >= limit {
            return None;
        }
        row.projected_exhaustion
            .map(|at| format::local_time(at, row.projected_utc_offset))
    }

    /// `  + 80,000 tokens of grants`, `  EXCEEDED`, both or nothing.
    fn credit_note(row: &QuotaRow) -> String {
        let mut note = String::new();
        if !row.granted.is_zero() {
            note = format!(
                "  + {} of grants",
                format_amount(&row.metric, &row.grant_remaining)
            );
        }
        if row.exceeded {
            note.push_str("  EXCEEDED");
        }
        note
    }

    /// The same fields as `quota_status()`, plus the reset instant in the subject's zone; for
    /// an organization also its name and `top_members`.
    pub fn to_json(&self) -> Value {
        let limits: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "metric": r.metric,
                    "period": r.period,
                    "kind": r.kind,
                    "used": number(&r.used),
                    "limit_value": r.limit_value.as_ref().map(number),
                    "remaining": r.remaining.as_ref().map(number),
                    "unlimited": r.unlimited,
                    "exceeded": r.exceeded,
                    "percent": r.percent.as_ref().map(number),
                    "granted": number(&r.granted),
                    "grant_remaining": number(&r.grant_remaining),
                    "period_start": r.period_start,
                    "period_end": r.period_end,
                    "resets_local": Self::resets_local(r).to_rfc3339(),
                    "projected_exhaustion": r.projected_exhaustion,
                    "projected_exhaustion_local": r.projected_exhaustion
                        .map(|at| format::local_time(at, r.projected_utc_offset).to_rfc3339()),
                })
            })
            .collect();
        let mut report = json!({
            "timezone": self.timezone,
            "zone_used": self.zone,
            "plan": self.plan,
            "at": self.at,
            "limits": limits,
            "grants": grants::to_json(&self.grants),
        });
        if let Some(emails) = &self.alert_emails {
            report["alert_emails"] = json!(emails);
        }
        match self.subject {
            Subject::User(id) => report["user_id"] = json!(id),
            Subject::Org(id) => {
                report["org_id"] = json!(id);
                report["name"] = json!(self.name);
            }
        }
        if let Some(members) = &self.members {
            report["top_members"] = members.to_json();
        }
        report
    }
}

/// `all (quota and credit alerts)`: a stored preference in words.
fn alert_emails_words(preference: &str) -> String {
    let what = match preference {
        "all" => "quota, forecast and credit alerts",
        "quota" => "quota and forecast alerts only",
        "credit" => "credit alerts only",
        _ => "none",
    };
    if preference == "none" {
        "none".to_string()
    } else {
        format!("{preference} ({what})")
    }
}

fn bar(percent: f64) -> String {
    let filled = ((percent / 100.0) * BAR_WIDTH as f64)
        .round()
        .clamp(0.0, BAR_WIDTH as f64) as usize;
    format!("{}{}", "█".repeat(filled), "░".repeat(BAR_WIDTH - filled))
}

/// A JSON number: an integer when the value is whole, else a float.
pub(crate) fn number(value: &BigDecimal) -> Value {
    if value.is_integer()
        && let Some(i) = value.to_i64()
    {
        return json!(i);
    }
    value.to_f64().map_or(Value::Null, |f| json!(f))
}

/// `71,234`, or `12.35` for cost.
pub(crate) fn format_amount(metric: &str, value: &BigDecimal) -> String {
    if metric == "cost" {
        format::money(value)
    } else {
        format::whole(value)
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;
    use crate::mail::content::{AlertFacts, alert_content};

    fn dec(text: &str) -> BigDecimal {
        BigDecimal::from_str(text).unwrap()
    }

    fn usage_table_line(metric: &str, used: &BigDecimal) -> String {
        let at: DateTime<Utc> = "2026-11-23T12:00:00Z".parse().unwrap();
        let report = QuotaReport {
            subject: Subject::User(7),
            name: String::new(),
            timezone: "UTC".into(),
            zone: "UTC".into(),
            plan: None,
            at,
            at_utc_offset: 0,
            rows: vec![QuotaRow {
                metric: metric.into(),
                period: "month".into(),
                kind: String::new(),
                used: used.clone(),
                limit_value: None,
                remaining: None,
                unlimited: true,
                exceeded: false,
                percent: None,
                period_start: at,
                period_end: at,
                granted: BigDecimal::from(0),
                grant_remaining: BigDecimal::from(0),
                period_end_utc_offset: 0,
                projected_exhaustion: None,
                projected_utc_offset: 0,
            }],
            members: None,
            grants: Vec::new(),
            alert_emails: Some("all".into()),
        };
        report.to_table().lines().nth(1).unwrap().to_string()
    }

    fn email_used(metric: &str, used: &BigDecimal) -> String {
        let facts = AlertFacts {
            name: "Ada".into(),
            zone: "UTC".into(),
            metric: metric.into(),
            period: "month".into(),
            kind: String::new(),
            threshold: 80,
            used: used.clone(),
            limit: used.clone(),
            period_end: format::local_time("2026-12-01T00:00:00Z".parse().unwrap(), 0),
            projected: None,
        };
        alert_content(&facts, None, None).used
    }

    #[test]
    fn the_usage_table_and_the_alert_email_write_an_amount_alike() {
        for (amount, text) in [
            ("12.345", "12.35"),
            ("0.005", "0.01"),
            ("1234567.891", "1,234,567.89"),
        ] {
            let value = dec(amount);
            assert!(
                usage_table_line("cost", &value).contains(&format!(" {text} used")),
                "{amount}: {}",
                usage_table_line("cost", &value)
            );
            assert_eq!(email_used("cost", &value), format!("${text}"), "{amount}");
        }
        for (amount, text) in [("1234567", "1,234,567"), ("999.9", "999"), ("1", "1")] {
            let value = dec(amount);
            assert!(
                usage_table_line("tokens", &value).contains(&format!(" {text} used")),
                "{amount}: {}",
                usage_table_line("tokens", &value)
            );
            let email = email_used("tokens", &value);
            assert!(email.starts_with(&format!("{text} token")), "{email}");
        }
    }

    #[test]
    fn bars_fill_in_proportion_and_stop_at_full() {
        assert_eq!(bar(71.0).chars().filter(|&c| c == '█').count(), 14);
        assert_eq!(bar(150.0), "█".repeat(BAR_WIDTH));
        assert_eq!(bar(0.0), "░".repeat(BAR_WIDTH));
    }
}
