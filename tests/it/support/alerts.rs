//! The alerts tests' world: users and organizations on plans, their months, and reading back
//! the alerts decided and the emails sent. A subject's periods are written with SQL, as
//! aggregation would leave them.

use std::sync::Arc;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Int2, Int4, Nullable, Text};
use usage_worker::config::Settings;
use usage_worker::jobs::{Ctx, JobKind, JobReport, RunOpts};
use usage_worker::subject::Subject;

use super::smtp::SmtpServer;
use super::{TestDb, at};

/// November 2026 in UTC, and December.
pub const NOV: &str = "2026-11-01T00:00:00Z";
pub const DEC: &str = "2026-12-01T00:00:00Z";
pub const JAN: &str = "2027-01-01T00:00:00Z";
/// November 2026 in New York (EDT until the 1st at 02:00, then EST): Acme's month.
pub const NY_NOV: &str = "2026-11-01T04:00:00Z";
pub const NY_DEC: &str = "2026-12-01T05:00:00Z";

/// Plans: `free` allows 1,000 tokens a month and 10 image generations a day; `pro` 10,000
/// tokens a month; `enterprise` has no limits. Ada, Bob and Cy are on `free`; Dee has her
/// alerts off. Organization 7, Acme, in New York on `free`: Ada owner, Bob admin, Cy member,
/// Dee admin. Organization 8, Globex, in UTC on `free`, has alerts off; Ada owns it.
pub fn seed(db: &TestDb) {
    db.execute(
        "INSERT INTO plans (id, name) VALUES (1, 'free'), (2, 'pro'), (3, 'enterprise');
         INSERT INTO plan_limits (plan_id, metric, period, kind, max_value) VALUES
             (1, 'tokens', 'month', '', 1000),
             (1, 'requests', 'day', 'image_generation', 10),
             (2, 'tokens', 'month', '', 10000);
         INSERT INTO users (id, email, name, timezone, plan_id, alerts_enabled) VALUES
             (1, 'ada@example.com', 'Ada', 'Europe/Berlin', 1, true),
             (2, 'bob@example.com', 'Bob', 'UTC', 1, true),
             (3, 'cy@example.com', 'Cy', 'America/New_York', 1, true),
             (4, 'dee@example.com', 'Dee', 'UTC', NULL, false);
         INSERT INTO organizations (id, name, timezone, plan_id, alerts_enabled) VALUES
             (7, 'Acme', 'America/New_York', 1, true),
             (8, 'Globex', 'UTC', 1, false);
         INSERT INTO organization_members (org_id, user_id, role) VALUES
             (7, 1, 'owner'), (7, 2, 'admin'), (7, 3, 'member'), (7, 4, 'admin'),
             (8, 1, 'owner');",
    );
}

/// A subject of [`seed`] with its November and who is told about it.
#[derive(Clone, Copy)]
pub struct Case {
    pub subject: Subject,
    /// The subject's November, in its zone (a user's written in UTC).
    pub month: (&'static str, &'static str),
    /// Who is told, by user id, and whether their own alerts are on.
    pub recipients: &'static [(i64, bool)],
}

/// Ada's personal quota: she is told.
pub const ADA: Case = Case {
    subject: Subject::User(1),
    month: (NOV, DEC),
    recipients: &[(1, true)],
};

/// Cy's personal quota: he is told.
pub const CY: Case = Case {
    subject: Subject::User(3),
    month: (NOV, DEC),
    recipients: &[(3, true)],
};

/// Acme's shared quota: its owner Ada and admin Bob are told, admin Dee has her alerts off,
/// member Cy is never told.
pub const ACME: Case = Case {
    subject: Subject::Org(7),
    month: (NY_NOV, NY_DEC),
    recipients: &[(1, true), (2, true), (4, false)],
};

/// Globex's shared quota: its owner Ada would be told.
pub const GLOBEX: Case = Case {
    subject: Subject::Org(8),
    month: (NOV, DEC),
    recipients: &[(1, true)],
};

impl Case {
    /// The rows [`statuses`] lists for `thresholds` of this case's November: `status` for each
    /// recipient whose alerts are on, suppressed for the others.
    pub fn rows(&self, thresholds: &[i16], status: &str) -> Vec<(i64, i64, i16, String)> {
        let (_, org) = self.subject.key();
        self.recipients
            .iter()
            .flat_map(|&(user, on)| {
                let status = if on { status } else { "suppressed" };
                thresholds.iter().map(move |&t| row(org, user, t, status))
            })
            .collect()
    }

    /// The Message-ID of the email about `threshold` of this case's November to `recipient`.
    pub fn message_id(&self, recipient: i64, threshold: i16) -> String {
        let start = self.month.0.replace(['-', ':'], "");
        match self.subject {
            Subject::User(id) => {
                format!("<quota-alert.{id}.tokens.month.all.{start}.{threshold}@example.com>")
            }
            Subject::Org(id) => format!(
                "<org-quota-alert.{id}.{recipient}.tokens.month.all.{start}.{threshold}@example.com>"
            ),
        }
    }

    /// The Message-IDs of the emails about `thresholds` to every recipient with alerts on,
    /// sorted.
    pub fn message_ids(&self, thresholds: &[i16]) -> Vec<String> {
        let mut ids: Vec<String> = self
            .recipients
            .iter()
            .filter(|(_, on)| *on)
            .flat_map(|&(user, _)| thresholds.iter().map(move |&t| self.message_id(user, t)))
            .collect();
        ids.sort();
        ids
    }

    /// The addresses of the recipients with alerts on, sorted.
    pub fn addresses(&self) -> Vec<String> {
        let mut addresses: Vec<String> = self
            .recipients
            .iter()
            .filter(|(_, on)| *on)
            .map(|(user, _)| address(*user).to_string())
            .collect();
        addresses.sort();
        addresses
    }

    /// Sets the subject's token total in its November.
    pub fn set_tokens(&self, db: &TestDb, tokens: i64) {
        set_tokens(db, self.subject, self.month.0, self.month.1, tokens);
    }
}

/// The address of user `id` of [`seed`].
pub fn address(id: i64) -> &'static str {
    [
        "",
        "ada@example.com",
        "bob@example.com",
        "cy@example.com",
        "dee@example.com",
    ][id as usize]
}

/// Sets a subject's token total in its month-long open period from `start` to `end`.
pub fn set_tokens(db: &TestDb, subject: Subject, start: &str, end: &str, tokens: i64) {
    let (user_id, org_id) = subject.key();
    db.execute(&format!(
        "INSERT INTO usage_periods (user_id, org_id, period, period_start, period_end, tokens)
         VALUES ({user_id}, {org_id}, 'month', '{start}', '{end}', {tokens})
         ON CONFLICT (user_id, org_id, period, period_start) DO UPDATE SET tokens = EXCLUDED.tokens"
    ));
}

/// A seeded database and a context that sends through a fresh SMTP server, with `change`
/// applied to the settings.
pub fn seeded_with_smtp_and(change: impl FnOnce(&mut Settings)) -> (TestDb, SmtpServer, Arc<Ctx>) {
    let db = TestDb::new();
    seed(&db);
    let server = SmtpServer::start();
    let ctx = db.ctx_with(|s| {
        server.configure(&mut s.mail);
        change(s);
    });
    (db, server, ctx)
}

pub fn seeded_with_smtp() -> (TestDb, SmtpServer, Arc<Ctx>) {
    seeded_with_smtp_and(|_| {})
}

pub fn run(db: &TestDb, ctx: &Ctx, now: &str) -> JobReport {
    JobKind::Alerts
        .run(ctx, &mut db.conn(), at(now), &RunOpts::default())
        .unwrap()
}

#[derive(QueryableByName, Debug, PartialEq)]
pub struct Row {
    #[diesel(sql_type = BigInt)]
    pub org_id: i64,
    #[diesel(sql_type = BigInt)]
    pub user_id: i64,
    #[diesel(sql_type = Int2)]
    pub threshold: i16,
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = Int4)]
    pub attempts: i32,
    #[diesel(sql_type = Nullable<Text>)]
    pub error_class: Option<String>,
}

/// Every alert, by organization (0: personal), recipient, period and threshold.
pub fn alerts(db: &TestDb) -> Vec<Row> {
    diesel::sql_query(
        "SELECT org_id, user_id, threshold, status, attempts, error_class FROM quota_alerts
          ORDER BY org_id, user_id, period_start, threshold",
    )
    .load(&mut db.conn())
    .unwrap()
}

/// Every alert as (organization or 0, recipient, threshold, status).
pub fn statuses(db: &TestDb) -> Vec<(i64, i64, i16, String)> {
    alerts(db)
        .into_iter()
        .map(|r| (r.org_id, r.user_id, r.threshold, r.status))
        .collect()
}

/// A row of [`statuses`].
pub fn row(org: i64, user: i64, threshold: i16, status: &str) -> (i64, i64, i16, String) {
    (org, user, threshold, status.to_string())
}

/// The subjects of the emails received, in order.
pub fn subjects(server: &SmtpServer) -> Vec<String> {
    server
        .received()
        .iter()
        .map(|m| m.header("Subject").unwrap_or_default())
        .collect()
}

/// The Message-IDs of the emails received, sorted.
pub fn message_ids(server: &SmtpServer) -> Vec<String> {
    let mut ids: Vec<String> = server.received().iter().map(|m| m.message_id()).collect();
    ids.sort();
    ids
}
