//! The status of a row of the `quota_alerts` outbox. The table's CHECK constraint and the SQL
//! files spell the same eight words.

use diesel::deserialize::{self, FromSql};
use diesel::pg::{Pg, PgValue};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    /// Waiting to be sent (again, after a failed attempt).
    Pending,
    /// Claimed by a delivery under a lease.
    Sending,
    Sent,
    /// Given up on: a permanent rejection or too many attempts.
    Failed,
    /// Not sent because the user turned alerts off.
    Suppressed,
    /// Not sent because a higher threshold of the same period is.
    Superseded,
    /// Not sent in time (`alerts.expire_after`) or its period ended.
    Expired,
    /// Not emailed because the recipient's email preference (`users.alert_emails`) leaves
    /// its kind out; its webhooks still go.
    Unsubscribed,
}

impl AlertStatus {
    pub const ALL: [AlertStatus; 8] = [
        AlertStatus::Pending,
        AlertStatus::Sending,
        AlertStatus::Sent,
        AlertStatus::Failed,
        AlertStatus::Suppressed,
        AlertStatus::Superseded,
        AlertStatus::Expired,
        AlertStatus::Unsubscribed,
    ];

    /// The word stored in `quota_alerts.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Pending => "pending",
            AlertStatus::Sending => "sending",
            AlertStatus::Sent => "sent",
            AlertStatus::Failed => "failed",
            AlertStatus::Suppressed => "suppressed",
            AlertStatus::Superseded => "superseded",
            AlertStatus::Expired => "expired",
            AlertStatus::Unsubscribed => "unsubscribed",
        }
    }

    pub fn from_name(name: &str) -> Option<AlertStatus> {
        AlertStatus::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for AlertStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromSql<Text, Pg> for AlertStatus {
    fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
        let text = <String as FromSql<Text, Pg>>::from_sql(value)?;
        AlertStatus::from_name(&text).ok_or_else(|| {
            format!(
                "quota_alerts.status `{text}` is not one of {}; the schema is newer than this \
                 binary: upgrade usage-worker",
                AlertStatus::ALL.map(AlertStatus::as_str).join(", ")
            )
            .into()
        })
    }
}

/// A status read back from a statement (`RETURNING status`).
#[derive(QueryableByName)]
pub struct StatusRow {
    #[diesel(sql_type = Text)]
    pub status: AlertStatus,
}

/// Rows per status (`SELECT status, count(*) AS n … GROUP BY status`).
#[derive(QueryableByName)]
pub struct StatusCount {
    #[diesel(sql_type = Text)]
    pub status: AlertStatus,
    #[diesel(sql_type = BigInt)]
    pub n: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_reads_back_from_its_stored_word() {
        for status in AlertStatus::ALL {
            assert_eq!(AlertStatus::from_name(status.as_str()), Some(status));
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::json!(status.as_str())
            );
        }
        assert_eq!(AlertStatus::from_name("queued"), None);
    }
}
