//! The members of an organization who used the most of its quota in its current month
//! (`org_usage_by_member()` over the month period's local days): who to ask first when the
//! shared limit runs out. Email addresses are masked as in logs; names are shown.

use std::fmt::Write as _;

use bigdecimal::BigDecimal;
use chrono::NaiveDate;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Date, Nullable, Numeric, Text, Timestamptz};
use serde_json::{Value, json};

use super::{QuotaRow, format_amount, number};
use crate::redact::mask_email;

/// How many members the report lists.
pub const TOP_MEMBERS: i64 = 10;

const DAYS_SQL: &str = include_str!("sql/members_days.sql");
const TOP_SQL: &str = include_str!("sql/members_top.sql");

/// One member's usage in the organization over the report's days.
#[derive(Debug, Clone, QueryableByName)]
pub struct MemberUsage {
    #[diesel(sql_type = BigInt)]
    pub user_id: i64,
    /// Empty when the user is no longer in `users`.
    #[diesel(sql_type = Text)]
    pub name: String,
    /// Masked (`a***@example.com`); empty when the user is no longer in `users`.
    #[diesel(sql_type = Text)]
    pub email: String,
    /// `owner`, `admin` or `member`; `None` for someone who has left the organization.
    #[diesel(sql_type = Nullable<Text>)]
    pub role: Option<String>,
    #[diesel(sql_type = BigInt)]
    pub events: i64,
    #[diesel(sql_type = BigInt)]
    pub tokens: i64,
    #[diesel(sql_type = BigInt)]
    pub messages: i64,
    #[diesel(sql_type = BigInt)]
    pub bytes: i64,
    #[diesel(sql_type = Numeric)]
    pub cost: BigDecimal,
    /// Members with usage over the days, listed or not.
    #[diesel(sql_type = BigInt)]
    with_usage: i64,
}

/// The top members of an organization over its local days `from..=to`.
#[derive(Debug, Clone)]
pub struct OrgMembers {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub top: Vec<MemberUsage>,
    /// Members with usage beyond the listed ones.
    pub more: i64,
}

#[derive(QueryableByName)]
struct LocalDays {
    #[diesel(sql_type = Date)]
    first_day: NaiveDate,
    #[diesel(sql_type = Date)]
    last_day: NaiveDate,
}

/// The organization's members with the most tokens in the month period of `rows` (its
/// `org_quota_status()`), over the local days of that period in `zone`.
pub(super) fn load_top(
    conn: &mut PgConnection,
    org_id: i64,
    zone: &str,
    rows: &[QuotaRow],
) -> QueryResult<Option<OrgMembers>> {
    let Some(month) = rows.iter().find(|r| r.period == "month") else {
        return Ok(None);
    };
    let days: LocalDays = diesel::sql_query(DAYS_SQL)
        .bind::<Timestamptz, _>(month.period_start)
        .bind::<Timestamptz, _>(month.period_end)
        .bind::<Text, _>(zone)
        .get_result(conn)?;
    let (from, to) = (days.first_day, days.last_day.max(days.first_day));
    let mut top: Vec<MemberUsage> = diesel::sql_query(TOP_SQL)
        .bind::<BigInt, _>(org_id)
        .bind::<Date, _>(from)
        .bind::<Date, _>(to)
        .bind::<BigInt, _>(TOP_MEMBERS)
        .load(conn)?;
    for member in &mut top {
        if !member.email.is_empty() {
            member.email = mask_email(&member.email);
        }
    }
    let more = top.first().map_or(0, |m| m.with_usage) - top.len() as i64;
    Ok(Some(OrgMembers {
        from,
        to,
        top,
        more,
    }))
}

impl OrgMembers {
    /// `top members 2026-11-01 to 2026-11-30 (Europe/Berlin days), by tokens:` and a line per
    /// member.
    pub(super) fn write_table(&self, out: &mut String, zone: &str) {
        let _ = writeln!(
            out,
            "top members {} to {} ({zone} days), by tokens:",
            self.from, self.to
        );
        if self.top.is_empty() {
            let _ = writeln!(out, "  no usage by members in these days");
            return;
        }
        let width = |f: &dyn Fn(&MemberUsage) -> usize| self.top.iter().map(f).max().unwrap_or(0);
        let user_w = width(&|m| m.user_id.to_string().len()).max("USER".len());
        let name_w = width(&|m| m.name.chars().count()).max("NAME".len());
        let email_w = width(&|m| m.email.chars().count()).max("EMAIL".len());
        let _ = writeln!(
            out,
            "  {:<user_w$}  {:<6}  {:<name_w$}  {:<email_w$}  {:>8}  {:>12}  {:>9}  {:>10}",
            "USER", "ROLE", "NAME", "EMAIL", "EVENTS", "TOKENS", "MESSAGES", "COST"
        );
        for m in &self.top {
            let whole = |n: i64| format_amount("tokens", &BigDecimal::from(n));
            let _ = writeln!(
                out,
                "  {:<user_w$}  {:<6}  {:<name_w$}  {:<email_w$}  {:>8}  {:>12}  {:>9}  {:>10}",
                m.user_id,
                m.role.as_deref().unwrap_or("left"),
                m.name,
                m.email,
                whole(m.events),
                whole(m.tokens),
                whole(m.messages),
                format_amount("cost", &m.cost),
            );
        }
        if self.more > 0 {
            let _ = writeln!(out, "  … and {} more member(s) with usage", self.more);
        }
    }

    /// `{from, to, members: [...], more}`: the listed members with exact numbers.
    pub(super) fn to_json(&self) -> Value {
        let members: Vec<Value> = self
            .top
            .iter()
            .map(|m| {
                json!({
                    "user_id": m.user_id,
                    "name": m.name,
                    "email": m.email,
                    "role": m.role,
                    "events": m.events,
                    "tokens": m.tokens,
                    "messages": m.messages,
                    "bytes": m.bytes,
                    "cost": number(&m.cost),
                })
            })
            .collect();
        json!({ "from": self.from, "to": self.to, "members": members, "more": self.more })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(user_id: i64, name: &str, role: Option<&str>, tokens: i64) -> MemberUsage {
        MemberUsage {
            user_id,
            name: name.into(),
            email: mask_email(&format!("{}@example.com", name.to_lowercase())),
            role: role.map(str::to_string),
            events: 3,
            tokens,
            messages: 1234,
            bytes: 0,
            cost: "12.345".parse().unwrap(),
            with_usage: 3,
        }
    }

    fn members(top: Vec<MemberUsage>, more: i64) -> OrgMembers {
        OrgMembers {
            from: "2026-11-01".parse().unwrap(),
            to: "2026-11-30".parse().unwrap(),
            top,
            more,
        }
    }

    #[test]
    fn the_table_lists_members_with_role_masked_address_and_grouped_amounts() {
        let mut out = String::new();
        members(
            vec![
                member(3, "Ada", Some("owner"), 1_234_567),
                member(12, "Grace", None, 5),
            ],
            1,
        )
        .write_table(&mut out, "Europe/Berlin");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "top members 2026-11-01 to 2026-11-30 (Europe/Berlin days), by tokens:"
        );
        assert!(lines[1].trim_start().starts_with("USER"), "{out}");
        for expected in [
            "owner",
            "Ada",
            "a***@example.com",
            "1,234,567",
            "1,234",
            "12.35",
        ] {
            assert!(lines[2].contains(expected), "{expected}: {out}");
        }
        assert!(
            lines[3].contains("left") && lines[3].contains("g***@example.com"),
            "{out}"
        );
        assert_eq!(lines[4], "  … and 1 more member(s) with usage");
        assert!(!out.contains("ada@"), "{out}");
    }

    #[test]
    fn an_organization_without_usage_says_so() {
        let mut out = String::new();
        members(Vec::new(), 0).write_table(&mut out, "UTC");
        assert!(
            out.ends_with("  no usage by members in these days\n"),
            "{out}"
        );
    }

    #[test]
    fn the_json_gives_exact_numbers_and_a_null_role_for_a_member_who_left() {
        let json = members(vec![member(12, "Grace", None, 5)], 0).to_json();
        assert_eq!(json["from"], "2026-11-01");
        assert_eq!(json["members"][0]["role"], Value::Null);
        assert_eq!(json["members"][0]["cost"], 12.345);
        assert_eq!(json["members"][0]["email"], "g***@example.com");
        assert_eq!(json["more"], 0);
    }
}
