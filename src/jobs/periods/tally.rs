//! What a rollover run reports: its counts over all batches, drift found by reconciliation,
//! and subjects whose time zone PostgreSQL does not know.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Numeric, Text, Timestamptz};
use serde_json::json;

use super::QuotaPeriod;
use crate::jobs::JobReport;
use crate::subject::Subject;

/// Drift warnings logged one by one per run; the rest are counted.
const DRIFT_WARNINGS_LOGGED: usize = 100;
/// Drift rows kept in the run report.
const DRIFT_SAMPLES_REPORTED: usize = 20;

/// One value where recorded totals and raw events disagreed.
#[derive(Debug, Clone, QueryableByName, serde::Serialize)]
#[serde(into = "DriftSample")]
pub struct Drift {
    #[diesel(sql_type = BigInt)]
    pub user_id: i64,
    #[diesel(sql_type = BigInt)]
    pub org_id: i64,
    #[diesel(sql_type = Timestamptz)]
    pub period_start: DateTime<Utc>,
    /// '' for the period's totals over all kinds.
    #[diesel(sql_type = Text)]
    pub kind: String,
    #[diesel(sql_type = Text)]
    pub metric: String,
    #[diesel(sql_type = Numeric)]
    pub recorded: bigdecimal::BigDecimal,
    #[diesel(sql_type = Numeric)]
    pub actual: bigdecimal::BigDecimal,
    #[diesel(sql_type = Numeric)]
    pub delta: bigdecimal::BigDecimal,
}

impl Drift {
    fn subject(&self) -> Subject {
        Subject::of_row(self.user_id, self.org_id)
    }
}

/// A drift row as the run report keeps it: named by its subject (`org 7`, not `user 0`).
#[derive(serde::Serialize)]
struct DriftSample {
    subject: String,
    user_id: i64,
    org_id: i64,
    period_start: DateTime<Utc>,
    kind: String,
    metric: String,
    recorded: bigdecimal::BigDecimal,
    actual: bigdecimal::BigDecimal,
    delta: bigdecimal::BigDecimal,
}

impl From<Drift> for DriftSample {
    fn from(d: Drift) -> Self {
        DriftSample {
            subject: d.subject().to_string(),
            user_id: d.user_id,
            org_id: d.org_id,
            period_start: d.period_start,
            kind: d.kind,
            metric: d.metric,
            recorded: d.recorded,
            actual: d.actual,
            delta: d.delta,
        }
    }
}

/// A period's subject whose zone is unknown, so its periods are computed in UTC.
#[derive(QueryableByName)]
pub struct UnknownZone {
    #[diesel(sql_type = BigInt)]
    user_id: i64,
    #[diesel(sql_type = BigInt)]
    org_id: i64,
}

/// What one batch of a rollover run did.
pub struct ClosedBatch {
    pub closed: usize,
    /// Of `closed`, organizations' periods.
    pub org_periods: usize,
    pub opened: usize,
    pub drift: Vec<Drift>,
    pub unknown_zones: Vec<UnknownZone>,
}

/// Where a subject's time zone is set, for the warning that names what to fix.
pub fn zone_column(subject: Subject) -> &'static str {
    match subject {
        Subject::User(_) => "users.timezone",
        Subject::Org(_) => "organizations.timezone",
    }
}

/// Warns that `subject`'s zone is unknown and its periods are computed in UTC.
pub fn warn_unknown_zone(subject: Subject, period: Option<QuotaPeriod>) {
    tracing::warn!(
        user.id = subject.user_id(),
        org.id = subject.org_id(),
        period = period.map(QuotaPeriod::as_str),
        "unknown time zone in {} of {subject}; periods computed in UTC (fix the time zone)",
        zone_column(subject)
    );
}

/// The totals of a rollover run over all its batches, and what it has logged so far.
#[derive(Default)]
pub struct CloseTally {
    closed: usize,
    org_periods: usize,
    opened: usize,
    batches: usize,
    drift_values: usize,
    drift_periods: BTreeSet<(Subject, DateTime<Utc>)>,
    drift_samples: Vec<Drift>,
    unknown_zones: BTreeSet<Subject>,
}

impl CloseTally {
    /// Counts a batch, warning once per subject with an unknown zone and for the first
    /// [`DRIFT_WARNINGS_LOGGED`] drifted values.
    pub fn add(&mut self, batch: ClosedBatch, period: QuotaPeriod) {
        self.batches += 1;
        self.closed += batch.closed;
        self.org_periods += batch.org_periods;
        self.opened += batch.opened;
        for zone in batch.unknown_zones {
            let subject = Subject::of_row(zone.user_id, zone.org_id);
            if self.unknown_zones.insert(subject) {
                warn_unknown_zone(subject, Some(period));
            }
        }
        for d in batch.drift {
            let subject = d.subject();
            if self.drift_values < DRIFT_WARNINGS_LOGGED {
                tracing::warn!(
                    user.id = subject.user_id(),
                    org.id = subject.org_id(),
                    period = period.as_str(),
                    period.start = %d.period_start,
                    event.kind = %d.kind,
                    metric = %d.metric,
                    recorded = %d.recorded,
                    actual = %d.actual,
                    delta = %d.delta,
                    "period total of {subject} drifted from the raw events; repaired"
                );
            }
            self.drift_values += 1;
            self.drift_periods.insert((subject, d.period_start));
            if self.drift_samples.len() < DRIFT_SAMPLES_REPORTED {
                self.drift_samples.push(d);
            }
        }
    }

    pub fn into_report(self, now: DateTime<Utc>, period: QuotaPeriod, dry_run: bool) -> JobReport {
        if self.drift_values > DRIFT_WARNINGS_LOGGED {
            tracing::warn!(
                period = period.as_str(),
                drift.values = self.drift_values,
                "more drifted values were repaired than logged; see the run report"
            );
        }
        let summary = self.summary(now, period, dry_run);
        JobReport::new(
            summary,
            json!({
                "period": period.as_str(),
                "closed": self.closed,
                "closed_org_periods": self.org_periods,
                "opened": self.opened,
                "batches": self.batches,
                "drift": {
                    "periods": self.drift_periods.len(),
                    "values": self.drift_values,
                    "samples": self.drift_samples,
                },
                "unknown_timezone_users": self.unknown_zone_ids(false),
                "unknown_timezone_orgs": self.unknown_zone_ids(true),
                "dry_run": dry_run,
            }),
        )
    }

    fn summary(&self, now: DateTime<Utc>, period: QuotaPeriod, dry_run: bool) -> String {
        let (verb, open_verb) = if dry_run {
            ("would close", "would open")
        } else {
            ("closed", "opened")
        };
        let of_orgs = if self.org_periods > 0 {
            format!(" ({} of organizations)", self.org_periods)
        } else {
            String::new()
        };
        let mut summary = format!(
            "{verb} {} {} period(s){of_orgs} ending at or before {}, {open_verb} {} successor(s)",
            self.closed,
            period.as_str(),
            now.format("%Y-%m-%d %H:%M:%SZ"),
            self.opened
        );
        if self.drift_values > 0 {
            summary.push_str(&format!(
                "; repaired drift in {} period(s) ({} value(s))",
                self.drift_periods.len(),
                self.drift_values
            ));
        }
        let (users, orgs) = (
            self.unknown_zone_ids(false).len(),
            self.unknown_zone_ids(true).len(),
        );
        if users > 0 {
            summary.push_str(&format!(
                "; {users} user(s) with an unknown time zone treated as UTC"
            ));
        }
        if orgs > 0 {
            summary.push_str(&format!(
                "; {orgs} organization(s) with an unknown time zone treated as UTC"
            ));
        }
        summary
    }

    /// The ids of users (`orgs` false) or organizations with an unknown zone.
    fn unknown_zone_ids(&self, orgs: bool) -> Vec<i64> {
        self.unknown_zones
            .iter()
            .filter_map(|s| match (s, orgs) {
                (Subject::User(id), false) | (Subject::Org(id), true) => Some(*id),
                _ => None,
            })
            .collect()
    }
}
