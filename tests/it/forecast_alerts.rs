//! Forecast alerts, alert email preferences and one-click unsubscribe, end to end: emails over
//! a real SMTP conversation (parsed by Python's `email` package, support/parse_mail.py),
//! webhooks verified by the `standardwebhooks` package, the binary's `--usage` and its
//! configuration checks.
//! - With `alerts.forecast_hours`, steady usage whose pace reaches the limit within those hours
//!   sends one `quota.forecast` email (subject and body naming the day on the subject's clock,
//!   its own Message-ID) and one verified `quota.forecast` webhook with the projection, once
//!   per period; an organization's goes to its owners and admins, its webhook once. No
//!   forecast without the setting, when the projection lies beyond it, while the pace does
//!   not reach the limit before the period ends, or once the limit is reached. A forecast
//!   follows the recipient's preference for quota alerts. The dry run names the forecast and
//!   the `quota.forecast` webhook the run then sends.
//! - A quota alert under the limit says "At this pace you will reach 100% on <day>" on the
//!   user's clock (a day the UTC date is not), not once the limit is reached; its webhook and
//!   row carry the projection.
//! - With `mail.unsubscribe_url` and its secret, the parsed email has one
//!   `List-Unsubscribe: <https://…?token=…>` (not encoded) and
//!   `List-Unsubscribe-Post: List-Unsubscribe=One-Click`, both bodies the "Manage notifications"
//!   link; the token lives at least 60 days after the email's Date, and
//!   `usage_unsubscribe(token)` turns that user's alert emails off: the next alert is recorded
//!   `unsubscribed` and not emailed, its webhook still delivered. Every alert email (a
//!   forecast, an organization's alert and forecast) carries a token of its own recipient.
//!   A token of another installation (another secret), or with its key id swapped for this
//!   one's, is refused with SQLSTATE 22023 and changes nothing. Under the roles of
//!   deploy/roles.sql the daemon (secret as a systemd credential) registers its key and the
//!   application's role applies the token.
//! - `users.alert_emails`: `quota`, `credit` and `none` each get their kind of email only
//!   (the rest `unsubscribed`, webhooks all delivered); `alerts_enabled = false` is
//!   `suppressed` whatever the preference (the dry run and the deciding run record the left-out
//!   ones `unsubscribed` from the start); a pending alert whose recipient changes the
//!   preference before delivery becomes `unsubscribed` and is not sent; an organization's
//!   alerts follow each recipient's own preference.
//! - `--usage` shows the preference in effect and "at this pace 100% on …" under the limit;
//!   `--json` has `alert_emails` and `projected_exhaustion`.
//! - The binary exits 78 naming the key for an unsubscribe URL that is not https with a host,
//!   a missing or short unsubscribe secret (inline or from a file), and
//!   `alerts.forecast_hours = 0`.
//!
//! Alerts are decided at fixed instants of November 2026, except where an unsubscribe token
//! is applied (`usage_unsubscribe()` compares its expiry with the database's `now()`) and for
//! `--usage` (which reports at the database's `now()`): those take every date from the
//! database's clock.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Int2, Text};
use secrecy::SecretString;
use serde_json::{Value, json};
use usage_worker::config::Settings;
use usage_worker::db;
use usage_worker::jobs::{Ctx, JobKind, JobReport, RunOpts};
use usage_worker::subject::Subject;

use crate::support::alerts::{NY_NOV, run, seeded_with_smtp_and, set_tokens};
use crate::support::clock::{db_now, month_around_now};
use crate::support::outcome::{Failure, outcome};
use crate::support::quota::{add_new_events_to_periods, event, month_tokens};
use crate::support::roles::RolesDb;
use crate::support::smtp::{Received, SmtpServer};
use crate::support::webhooks::{Receiver, SECRET_A};
use crate::support::{self, TestDb, at, report_lines, text};

/// Two unsubscribe secrets (48 characters each): this installation's and another one's.
const SECRET: &str = "k4XbUq9vTz2LmW7cRp0sYd5hNf8jGa3eKx6oBi1uVt4wQz9y";
const OTHER_SECRET: &str = "Zr8QmT1vXc4bNp7kLs2dHw5yJf0gUa3eRt6oBi9uVx1wKq4z";
const UNSUBSCRIBE_URL: &str = "https://example.com/email/unsubscribe";
const PREFERENCES_URL: &str = "https://example.com/settings/notifications";

/// Ada's November in Berlin, as `aggregate` opens it.
const ADA_START: &str = "2026-10-31T23:00:00Z";

// ---- the world ----

/// Settings: forecasts `forecast_hours` ahead (None: off), webhooks to `receiver`.
fn forecasting(settings: &mut Settings, forecast_hours: Option<u32>, receiver: Option<&Receiver>) {
    settings.alerts.forecast_hours = forecast_hours;
    if let Some(receiver) = receiver {
        settings.alerts.webhooks = vec![receiver.endpoint(&[SECRET_A], Duration::from_secs(5))];
    }
}

/// One-click unsubscribe signed with `secret`, and the "Manage notifications" link.
fn with_unsubscribe(settings: &mut Settings, secret: &str) {
    settings.mail.unsubscribe_url = Some(UNSUBSCRIBE_URL.into());
    settings.mail.unsubscribe_secret = Some(SecretString::from(secret.to_string()));
    settings.mail.preferences_url = Some(PREFERENCES_URL.into());
}

/// `count` events of `tokens` each, one every `every_hours` from `start` on, spent by `user`
/// personally (`org` None) or in organization `org`; then `aggregate` counts them.
fn steady(
    db: &TestDb,
    user: i64,
    org: Option<i64>,
    start: &str,
    count: i64,
    tokens: i64,
    every_hours: i64,
) {
    for i in 0..count {
        let when = at(start) + chrono::Duration::hours(i * every_hours);
        event(
            db,
            user,
            org,
            "ai_response",
            tokens,
            &when.to_rfc3339_opts(SecondsFormat::Secs, true),
        );
    }
    add_new_events_to_periods(&mut db.conn());
}

fn run_at(db: &TestDb, ctx: &Ctx, now: DateTime<Utc>) -> JobReport {
    JobKind::Alerts
        .run(ctx, &mut db.conn(), now, &RunOpts::default())
        .unwrap()
}

fn set_alert_emails(db: &TestDb, user: i64, preference: &str) -> String {
    text(
        &mut db.conn(),
        &format!("SELECT usage_set_alert_emails({user}, '{preference}') AS t"),
    )
}

fn alert_emails(db: &TestDb) -> Vec<(i64, String)> {
    #[derive(QueryableByName)]
    struct Pref {
        #[diesel(sql_type = BigInt)]
        id: i64,
        #[diesel(sql_type = Text)]
        alert_emails: String,
    }
    diesel::sql_query("SELECT id, alert_emails FROM users ORDER BY id")
        .load::<Pref>(&mut db.conn())
        .unwrap()
        .into_iter()
        .map(|p| (p.id, p.alert_emails))
        .collect()
}

/// One alert as recorded: (organization or 0, recipient, alert, threshold, status).
type Recorded = (i64, i64, String, i16, String);

fn recorded(org: i64, user: i64, alert: &str, threshold: i16, status: &str) -> Recorded {
    (org, user, alert.to_string(), threshold, status.to_string())
}

/// Every alert, by organization, recipient, alert and threshold.
fn alerts(db: &TestDb) -> Vec<Recorded> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        org_id: i64,
        #[diesel(sql_type = BigInt)]
        user_id: i64,
        #[diesel(sql_type = Text)]
        alert: String,
        #[diesel(sql_type = Int2)]
        threshold: i16,
        #[diesel(sql_type = Text)]
        status: String,
    }
    diesel::sql_query(
        "SELECT org_id, user_id, alert, threshold, status FROM quota_alerts
          ORDER BY org_id, user_id, alert, threshold",
    )
    .load::<Row>(&mut db.conn())
    .unwrap()
    .into_iter()
    .map(|r| (r.org_id, r.user_id, r.alert, r.threshold, r.status))
    .collect()
}

/// The verified webhooks the receiver accepted: (subject id, type, threshold of a quota
/// event), sorted.
fn webhooks(receiver: &Receiver) -> Vec<(i64, String, Option<i64>)> {
    let mut events: Vec<(i64, String, Option<i64>)> = receiver
        .accepted()
        .iter()
        .map(|r| {
            (
                r.body["data"]["subject"]["id"].as_i64().unwrap_or(-1),
                r.body["type"].as_str().unwrap_or_default().to_string(),
                r.body["data"]["threshold"].as_i64(),
            )
        })
        .collect();
    events.sort();
    events
}

/// The accepted webhooks of `event_type`, in order.
fn bodies_of(receiver: &Receiver, event_type: &str) -> Vec<Value> {
    receiver
        .accepted()
        .into_iter()
        .filter(|r| r.body["type"] == event_type)
        .map(|r| r.body)
        .collect()
}

/// (recipient, Message-ID) of every email received, sorted.
fn mailed(server: &SmtpServer) -> Vec<(String, String)> {
    let mut mail: Vec<(String, String)> = server
        .received()
        .iter()
        .map(|m| (m.rcpt.join(","), m.message_id()))
        .collect();
    mail.sort();
    mail
}

// ---- the email as a mail client reads it ----

/// A received message as Python's `email` package parses it (support/parse_mail.py).
struct Parsed(Value);

impl Parsed {
    fn of(message: &Received) -> Parsed {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/support/parse_mail.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run python3 (the mail parser)");
        child
            .stdin
            .take()
            .expect("stdin piped")
            .write_all(message.data.as_bytes())
            .expect("write the message to the parser");
        let out = child.wait_with_output().expect("wait for the parser");
        assert!(
            out.status.success(),
            "parse_mail.py: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let parsed: Value = serde_json::from_slice(&out.stdout).expect("the parser's JSON");
        assert_eq!(parsed["defects"], json!([]), "{}", message.data);
        Parsed(parsed)
    }

    /// Every value of header `name`.
    fn all(&self, name: &str) -> Vec<String> {
        self.0["headers"][name.to_ascii_lowercase()]
            .as_array()
            .map(|values| {
                values
                    .iter()
                    .map(|v| v.as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The one value of header `name`.
    fn header(&self, name: &str) -> String {
        let values = self.all(name);
        assert_eq!(values.len(), 1, "{name}: {values:?}");
        values[0].clone()
    }

    fn text(&self) -> String {
        self.0["text"].as_str().expect("a text body").to_string()
    }

    /// The HTML body's text as a mail client shows it: tags dropped, entities decoded,
    /// whitespace collapsed.
    fn html_text(&self) -> String {
        self.0["html_text"]
            .as_str()
            .expect("an HTML body")
            .to_string()
    }

    fn html(&self) -> String {
        self.0["html"].as_str().expect("an HTML body").to_string()
    }

    /// The links of the HTML body as a mail client shows them: (href, text), entities decoded.
    fn links(&self) -> Vec<(String, String)> {
        self.0["links"]
            .as_array()
            .expect("the links of the HTML body")
            .iter()
            .map(|l| {
                (
                    l[0].as_str().unwrap_or_default().to_string(),
                    l[1].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    fn date(&self) -> i64 {
        self.0["date_unix"].as_i64().expect("a Date header")
    }

    /// The `token` query parameter of the List-Unsubscribe link.
    fn unsubscribe_token(&self) -> String {
        let value = self.header("List-Unsubscribe");
        let link = value
            .strip_prefix('<')
            .and_then(|v| v.strip_suffix('>'))
            .unwrap_or_else(|| panic!("List-Unsubscribe is not one <URL>: {value}"));
        let url = url::Url::parse(link).unwrap_or_else(|e| panic!("{link}: {e}"));
        let tokens: Vec<String> = url
            .query_pairs()
            .filter(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
            .collect();
        assert_eq!(tokens.len(), 1, "{link}");
        tokens[0].clone()
    }
}

/// `SELECT * FROM usage_unsubscribe(token)`: Ok, or its SQLSTATE and message.
fn unsubscribe(db: &TestDb, token: &str) -> Result<(), Failure> {
    outcome(
        &mut db.conn(),
        &format!("SELECT * FROM usage_unsubscribe('{token}')"),
    )
}

// ---- 1. forecasts ----

/// Ada (Berlin, 1,000 tokens a month) spends 25 tokens every 12 hours from the start of her
/// November, 750 by the 16th at 12:00 in Berlin: 15.5 days in, at that pace the 1,000 are
/// reached 20 days and 16 hours in, on Saturday 21 November at 16:00 in Berlin, 124 hours on.
const FORECAST_AT: &str = "2026-11-16T11:00:00Z";

fn ada_at_750(db: &TestDb) {
    steady(db, 1, None, ADA_START, 30, 25, 12);
}

#[test]
fn a_pace_that_reaches_the_limit_within_forecast_hours_sends_one_forecast_email_and_webhook() {
    let receiver = Receiver::start(&[SECRET_A], &[]);
    let (db, server, ctx) = seeded_with_smtp_and(|s| forecasting(s, Some(168), Some(&receiver)));
    ada_at_750(&db);

    let preview = JobKind::Alerts
        .run(&ctx, &mut db.conn(), at(FORECAST_AT), &support::dry_run())
        .unwrap();
    assert!(
        report_lines(&preview)
            .iter()
            .any(|l| l.contains("user 1 a***@example.com: would email: forecast of monthly tokens")),
        "{:?}",
        report_lines(&preview)
    );
    assert!(alerts(&db).is_empty(), "the dry run recorded alerts");

    run(&db, &ctx, FORECAST_AT);
    assert_eq!(
        alerts(&db),
        vec![recorded(0, 1, "quota.forecast", 100, "sent")]
    );
    let received = server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].rcpt, vec!["ada@example.com"]);
    let mail = Parsed::of(&received[0]);
    assert_eq!(
        mail.header("Subject"),
        "At this pace your monthly token quota runs out on Saturday 21 November"
    );
    assert_eq!(
        mail.header("Message-ID"),
        "<quota-forecast.1.tokens.month.all.20261031T230000Z@example.com>"
    );
    let body = mail.text();
    assert!(
        body.contains("You have used 75% of your monthly token quota"),
        "{body}"
    );
    assert!(
        body.contains(
            "At this pace you will reach 100% on Saturday 21 November 2026, 16:00 CET (Europe/Berlin), before the quota resets on Tuesday 1 December 2026, 00:00 CET (Europe/Berlin)."
        ),
        "{body}"
    );
    assert!(
        mail.html_text().contains(
            "At this pace you will reach 100% on Saturday 21 November 2026, 16:00 CET (Europe/Berlin), before the quota resets on Tuesday 1 December 2026, 00:00 CET (Europe/Berlin)."
        ),
        "{}",
        mail.html()
    );

    let forecasts = bodies_of(&receiver, "quota.forecast");
    assert_eq!(forecasts.len(), 1, "{:?}", receiver.requests());
    assert!(receiver.requests().iter().all(|r| r.verified));
    let data = &forecasts[0]["data"];
    assert_eq!(data["subject"], json!({"type": "user", "id": 1}));
    assert_eq!(data["threshold"], 100);
    assert_eq!(data["used"], "750");
    assert_eq!(data["limit"], "1000");
    assert_eq!(data["projected_exhaustion"], "2026-11-21T15:00:00Z");
    assert_eq!(
        data["projected_exhaustion_local"],
        "2026-11-21T16:00:00+01:00"
    );

    // Once per period: neither a rerun nor more usage (now 85%: the 80% alert) sends another.
    run(&db, &ctx, "2026-11-16T12:00:00Z");
    steady(&db, 1, None, "2026-11-16T12:30:00Z", 4, 25, 1);
    run(&db, &ctx, "2026-11-17T11:00:00Z");
    run(&db, &ctx, "2026-11-17T11:05:00Z");
    assert_eq!(
        alerts(&db),
        vec![
            recorded(0, 1, "quota", 80, "sent"),
            recorded(0, 1, "quota.forecast", 100, "sent"),
        ]
    );
    let ids: Vec<String> = server.received().iter().map(Received::message_id).collect();
    assert_eq!(
        ids,
        vec![
            "<quota-forecast.1.tokens.month.all.20261031T230000Z@example.com>",
            "<quota-alert.1.tokens.month.all.20261031T230000Z.80@example.com>",
        ]
    );
    assert_eq!(
        webhooks(&receiver),
        vec![
            (1, "quota.forecast".to_string(), Some(100)),
            (1, "quota.threshold".to_string(), Some(80)),
        ]
    );
}

#[test]
fn an_organizations_forecast_emails_its_owners_and_admins_and_is_one_webhook() {
    let receiver = Receiver::start(&[SECRET_A], &[]);
    let (db, server, ctx) = seeded_with_smtp_and(|s| forecasting(s, Some(168), Some(&receiver)));
    // Acme (New York): member Cy spends 750 tokens at a steady pace from the start of its
    // November; at 15.5 days in, the pace reaches 1,000 on Saturday 21 November, 15:00 EST.
    steady(&db, 3, Some(7), NY_NOV, 30, 25, 12);
    run(&db, &ctx, "2026-11-16T16:00:00Z");
    run(&db, &ctx, "2026-11-16T16:05:00Z");

    assert_eq!(
        alerts(&db),
        vec![
            recorded(7, 1, "quota.forecast", 100, "sent"),
            recorded(7, 2, "quota.forecast", 100, "sent"),
            recorded(7, 4, "quota.forecast", 100, "suppressed"),
        ]
    );
    assert_eq!(
        mailed(&server),
        vec![
            (
                "ada@example.com".to_string(),
                "<org-quota-forecast.7.1.tokens.month.all.20261101T040000Z@example.com>"
                    .to_string()
            ),
            (
                "bob@example.com".to_string(),
                "<org-quota-forecast.7.2.tokens.month.all.20261101T040000Z@example.com>"
                    .to_string()
            ),
        ]
    );
    for message in server.received() {
        let mail = Parsed::of(&message);
        assert_eq!(
            mail.header("Subject"),
            "Acme: at this pace its monthly token quota runs out on Saturday 21 November"
        );
        assert!(
            mail.text().contains(
                "At this pace the organization will reach 100% on Saturday 21 November 2026, 15:00 EST (America/New_York)"
            ),
            "{}",
            mail.text()
        );
    }
    let forecasts = bodies_of(&receiver, "quota.forecast");
    assert_eq!(forecasts.len(), 1, "{forecasts:?}");
    assert_eq!(
        forecasts[0]["data"]["subject"],
        json!({"type": "organization", "id": 7, "name": "Acme"})
    );
    assert_eq!(
        forecasts[0]["data"]["projected_exhaustion"],
        "2026-11-21T20:00:00Z"
    );
    assert_eq!(
        forecasts[0]["data"]["projected_exhaustion_local"],
        "2026-11-21T15:00:00-05:00"
    );
}

#[test]
fn no_forecast_without_forecast_hours_or_when_the_projection_lies_beyond_them() {
    // Unset; then 120 hours, when the limit is 124 hours away.
    for hours in [None, Some(120)] {
        let receiver = Receiver::start(&[SECRET_A], &[]);
        let (db, server, ctx) = seeded_with_smtp_and(|s| forecasting(s, hours, Some(&receiver)));
        ada_at_750(&db);
        run(&db, &ctx, FORECAST_AT);
        run(&db, &ctx, "2026-11-16T12:00:00Z");
        assert_eq!(alerts(&db), vec![], "forecast_hours {hours:?}");
        assert!(server.received().is_empty(), "forecast_hours {hours:?}");
        assert!(receiver.requests().is_empty(), "forecast_hours {hours:?}");
    }
}

#[test]
fn no_forecast_while_the_pace_does_not_reach_the_limit_before_the_period_ends() {
    let (db, server, ctx) = seeded_with_smtp_and(|s| forecasting(s, Some(8_808), None));
    // 250 tokens in 15.5 days: at that pace the 1,000 would take 62 days, past the month's end,
    // even with the longest forecast_hours.
    steady(&db, 1, None, ADA_START, 10, 25, 12);
    run(&db, &ctx, FORECAST_AT);
    assert_eq!(alerts(&db), vec![]);
    assert!(server.received().is_empty());

    // 500 more tokens at once: 750, and the pace reaches the limit on the 21st.
    steady(&db, 1, None, "2026-11-16T11:30:00Z", 1, 500, 1);
    run(&db, &ctx, "2026-11-16T12:00:00Z");
    assert_eq!(
        alerts(&db),
        vec![recorded(0, 1, "quota.forecast", 100, "sent")]
    );
    assert_eq!(server.received().len(), 1);
}

#[test]
fn no_forecast_once_the_limit_is_reached() {
    let receiver = Receiver::start(&[SECRET_A], &[]);
    let (db, server, ctx) = seeded_with_smtp_and(|s| forecasting(s, Some(8_808), Some(&receiver)));
    // Ada used her 1,000 tokens in one go; Bob is past his.
    steady(&db, 1, None, "2026-11-05T09:00:00Z", 1, 1_000, 1);
    steady(&db, 2, None, "2026-11-05T09:00:00Z", 1, 1_200, 1);
    run(&db, &ctx, FORECAST_AT);
    run(&db, &ctx, "2026-11-16T12:00:00Z");

    assert_eq!(
        alerts(&db),
        vec![
            recorded(0, 1, "quota", 80, "superseded"),
            recorded(0, 1, "quota", 95, "sent"),
            recorded(0, 2, "quota", 80, "superseded"),
            recorded(0, 2, "quota", 95, "sent"),
        ]
    );
    assert_eq!(server.received().len(), 2);
    assert_eq!(
        webhooks(&receiver),
        vec![
            (1, "quota.exhausted".to_string(), Some(95)),
            (2, "quota.exhausted".to_string(), Some(95)),
        ]
    );
}

/// The dry run says what the run will send: the forecast's webhook is `quota.forecast`, to an
/// endpoint that subscribed to that type.
#[test]
fn the_dry_run_names_the_webhook_a_forecast_sends() {
    let receiver = Receiver::start(&[SECRET_A], &[]);
    let (db, _server, ctx) = seeded_with_smtp_and(|s| {
        forecasting(s, Some(168), Some(&receiver));
        s.alerts.webhooks[0].events = Some(vec!["quota.forecast".into()]);
    });
    ada_at_750(&db);
    let preview = JobKind::Alerts
        .run(&ctx, &mut db.conn(), at(FORECAST_AT), &support::dry_run())
        .unwrap();
    let previewed: Vec<String> = report_lines(&preview)
        .into_iter()
        .filter(|l| l.starts_with("webhook to "))
        .map(str::to_string)
        .collect();

    run(&db, &ctx, FORECAST_AT);
    assert_eq!(
        webhooks(&receiver),
        vec![(1, "quota.forecast".to_string(), Some(100))]
    );
    assert_eq!(previewed.len(), 1, "{previewed:?}");
    assert!(
        previewed[0].starts_with("webhook to 127.0.0.1: would send quota.forecast for user 1"),
        "{previewed:?}"
    );
}

#[test]
fn a_forecast_is_emailed_as_a_quota_alert_is_to_each_recipients_preference() {
    let receiver = Receiver::start(&[SECRET_A], &[]);
    let (db, server, ctx) = seeded_with_smtp_and(|s| forecasting(s, Some(168), Some(&receiver)));
    // Ada keeps credit alerts only, Bob quota alerts only; both at the same steady pace.
    set_alert_emails(&db, 1, "credit");
    set_alert_emails(&db, 2, "quota");
    ada_at_750(&db);
    steady(&db, 2, None, "2026-11-01T00:00:00Z", 30, 25, 12);
    run(&db, &ctx, "2026-11-16T12:00:00Z");
    run(&db, &ctx, "2026-11-16T12:05:00Z");

    assert_eq!(
        alerts(&db),
        vec![
            recorded(0, 1, "quota.forecast", 100, "unsubscribed"),
            recorded(0, 2, "quota.forecast", 100, "sent"),
        ]
    );
    assert_eq!(
        mailed(&server),
        vec![(
            "bob@example.com".to_string(),
            "<quota-forecast.2.tokens.month.all.20261101T000000Z@example.com>".to_string()
        )]
    );
    assert_eq!(
        webhooks(&receiver),
        vec![
            (1, "quota.forecast".to_string(), Some(100)),
            (2, "quota.forecast".to_string(), Some(100)),
        ]
    );
}

// ---- 2. the projection in quota alerts ----

#[test]
fn an_80_percent_alert_names_the_projected_day_on_the_users_clock_and_its_webhook_carries_it() {
    let receiver = Receiver::start(&[SECRET_A], &[]);
    let (db, server, ctx) = seeded_with_smtp_and(|s| forecasting(s, None, Some(&receiver)));
    // Ada: 800 tokens in 12 days and 24 minutes; at that pace 1,000 take 15 days and 30
    // minutes: 2026-11-15T23:30Z, a Sunday in UTC and Monday 16 November, 00:30 in Berlin.
    steady(&db, 1, None, ADA_START, 16, 50, 18);
    run(&db, &ctx, "2026-11-12T23:24:00Z");

    assert_eq!(alerts(&db), vec![recorded(0, 1, "quota", 80, "sent")]);
    let received = server.received();
    assert_eq!(received.len(), 1);
    let mail = Parsed::of(&received[0]);
    assert!(
        mail.text()
            .contains("At this pace you will reach 100% on Monday 16 November."),
        "{}",
        mail.text()
    );
    assert!(
        mail.html_text()
            .contains("At this pace you will reach 100% on Monday 16 November."),
        "{}",
        mail.html()
    );
    let stored = text(
        &mut db.conn(),
        "SELECT to_char(projected_exhaustion AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') AS t
           FROM quota_alerts",
    );
    assert_eq!(stored, "2026-11-15T23:30:00");
    let hooks = bodies_of(&receiver, "quota.threshold");
    assert_eq!(hooks.len(), 1, "{:?}", receiver.requests());
    assert_eq!(
        hooks[0]["data"]["projected_exhaustion"],
        "2026-11-15T23:30:00Z"
    );
    assert_eq!(
        hooks[0]["data"]["projected_exhaustion_local"],
        "2026-11-16T00:30:00+01:00"
    );

    // Past the limit there is no day ahead to name.
    steady(&db, 1, None, "2026-11-13T09:00:00Z", 1, 250, 1);
    run(&db, &ctx, "2026-11-13T12:00:00Z");
    let received = server.received();
    assert_eq!(received.len(), 2);
    let exhausted = Parsed::of(&received[1]);
    assert_eq!(
        exhausted.header("Subject"),
        "You have used all of your monthly token quota"
    );
    assert!(
        !exhausted.text().contains("At this pace"),
        "{}",
        exhausted.text()
    );
}

// ---- 3 and 4. one-click unsubscribe ----

/// A seeded database whose alerts are emailed through a fresh SMTP server with one-click
/// unsubscribe signed with `secret`, webhooks to `receiver`.
fn installation(secret: &str, receiver: Option<&Receiver>) -> (TestDb, SmtpServer, Arc<Ctx>) {
    seeded_with_smtp_and(|s| {
        with_unsubscribe(s, secret);
        forecasting(s, None, receiver);
    })
}

/// Ada at `tokens` of 1,000 in `month` (around the database's now); the alerts job runs at
/// the database's now (plus `later`): the email's token is valid now.
fn ada_alerted_now(
    db: &TestDb,
    ctx: &Ctx,
    month: &(String, String),
    tokens: i64,
    later: chrono::Duration,
) {
    set_tokens(db, Subject::User(1), &month.0, &month.1, tokens);
    run_at(db, ctx, db_now(db) + later);
}

#[test]
fn a_parsed_alert_email_has_one_click_unsubscribe_headers_whose_token_turns_alert_emails_off() {
    let receiver = Receiver::start(&[SECRET_A], &[]);
    let (db, server, ctx) = installation(SECRET, Some(&receiver));
    let month = month_around_now(&db);
    ada_alerted_now(&db, &ctx, &month, 850, chrono::Duration::zero());

    let received = server.received();
    assert_eq!(received.len(), 1);
    let mail = Parsed::of(&received[0]);
    let link = mail.header("List-Unsubscribe");
    assert!(
        link.starts_with(&format!("<{UNSUBSCRIBE_URL}?token=")) && link.ends_with('>'),
        "{link}"
    );
    // As sent, not MIME-encoded: what mail providers read is the URL itself.
    assert_eq!(received[0].header("List-Unsubscribe"), Some(link.clone()));
    assert_eq!(
        mail.all("List-Unsubscribe-Post"),
        vec!["List-Unsubscribe=One-Click"]
    );
    assert!(
        mail.text()
            .contains(&format!("Manage notifications: {PREFERENCES_URL}")),
        "{}",
        mail.text()
    );
    assert_eq!(
        mail.links(),
        vec![(
            PREFERENCES_URL.to_string(),
            "Manage notifications".to_string()
        )],
        "{}",
        mail.html()
    );

    let token = mail.unsubscribe_token();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 6, "{token}");
    assert_eq!(parts[..3], ["u1", "1", "all"], "{token}");
    let expires: i64 = parts[3].parse().unwrap();
    let lifetime = expires - mail.date();
    assert!(lifetime >= 60 * 86_400, "the link lives {lifetime} s");
    assert_eq!(
        lifetime,
        90 * 86_400,
        "docs/SCHEMA.md: 90 days after the email"
    );
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) AS n FROM usage_unsubscribe_keys WHERE key_id = '{}'",
            parts[4]
        )),
        1
    );

    assert_eq!(unsubscribe(&db, &token), Ok(()));
    assert_eq!(
        alert_emails(&db),
        vec![
            (1, "none".to_string()),
            (2, "all".to_string()),
            (3, "all".to_string()),
            (4, "all".to_string()),
        ]
    );

    // Ada's next alert (95 %) is recorded, not emailed; its webhook goes all the same.
    ada_alerted_now(&db, &ctx, &month, 960, chrono::Duration::minutes(5));
    assert_eq!(
        alerts(&db),
        vec![
            recorded(0, 1, "quota", 80, "sent"),
            recorded(0, 1, "quota", 95, "unsubscribed"),
        ]
    );
    assert_eq!(server.received().len(), 1);
    assert_eq!(
        webhooks(&receiver),
        vec![
            (1, "quota.threshold".to_string(), Some(80)),
            (1, "quota.threshold".to_string(), Some(95)),
        ]
    );
}

/// The List-Unsubscribe token of the one email `server` received.
fn token_of_the_email(server: &SmtpServer) -> String {
    let received = server.received();
    assert_eq!(received.len(), 1);
    Parsed::of(&received[0]).unsubscribe_token()
}

#[test]
fn a_token_of_another_installation_is_refused_with_22023_and_changes_nothing() {
    let (db, server, ctx) = installation(SECRET, None);
    ada_alerted_now(
        &db,
        &ctx,
        &month_around_now(&db),
        850,
        chrono::Duration::zero(),
    );
    let own = token_of_the_email(&server);

    let (other_db, other_server, other_ctx) = installation(OTHER_SECRET, None);
    let other_month = month_around_now(&other_db);
    ada_alerted_now(
        &other_db,
        &other_ctx,
        &other_month,
        850,
        chrono::Duration::zero(),
    );
    let foreign = token_of_the_email(&other_server);
    assert_ne!(own, foreign);

    let refused = unsubscribe(&db, &foreign).expect_err("a foreign token was applied");
    assert_eq!(refused.sqlstate, "22023", "{refused:?}");
    assert!(
        refused.message.contains("another installation"),
        "{refused:?}"
    );
    // The same token claiming this installation's key: the MAC does not match it.
    let mut parts: Vec<&str> = foreign.split('.').collect();
    parts[4] = own.split('.').nth(4).unwrap();
    let forged = parts.join(".");
    let refused = unsubscribe(&db, &forged).expect_err("a forged token was applied");
    assert_eq!(refused.sqlstate, "22023", "{refused:?}");
    assert!(refused.message.contains("signature"), "{refused:?}");

    let everyone_all: Vec<(i64, String)> = (1..=4).map(|id| (id, "all".to_string())).collect();
    assert_eq!(alert_emails(&db), everyone_all);
    assert_eq!(
        db.count("SELECT count(*) AS n FROM usage_unsubscribe_keys"),
        1
    );
    // This installation's own token is applied: the refusals were about the tokens.
    assert_eq!(unsubscribe(&db, &own), Ok(()));
    assert_eq!(alert_emails(&db)[0], (1, "none".to_string()));
}

#[test]
fn every_alert_email_carries_a_token_of_its_own_recipient() {
    let (db, server, ctx) = seeded_with_smtp_and(|s| {
        with_unsubscribe(s, SECRET);
        forecasting(s, Some(24), None);
    });
    // In the day since their months started, Ada used 600 of her 1,000 tokens (at that pace
    // the rest goes in 16 hours: a forecast) and Acme 900 of its 1,000 (the 80% alert to Ada
    // and Bob, and a forecast to both).
    let (start, end) = month_around_now(&db);
    set_tokens(&db, Subject::User(1), &start, &end, 600);
    set_tokens(&db, Subject::Org(7), &start, &end, 900);
    run_at(&db, &ctx, db_now(&db));

    let mut seen: Vec<(String, String, String)> = server
        .received()
        .iter()
        .map(|m| {
            let mail = Parsed::of(m);
            assert_eq!(
                mail.all("List-Unsubscribe-Post"),
                vec!["List-Unsubscribe=One-Click"]
            );
            let token = mail.unsubscribe_token();
            let named = token.split('.').nth(1).unwrap_or_default().to_string();
            (m.rcpt.join(","), m.message_id(), named)
        })
        .collect();
    seen.sort();
    let kinds: Vec<(&str, &str, &str)> = seen
        .iter()
        .map(|(to, id, named)| {
            let kind = id
                .trim_start_matches('<')
                .split('.')
                .next()
                .unwrap_or_default();
            (to.as_str(), kind, named.as_str())
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("ada@example.com", "org-quota-alert", "1"),
            ("ada@example.com", "org-quota-forecast", "1"),
            ("ada@example.com", "quota-forecast", "1"),
            ("bob@example.com", "org-quota-alert", "2"),
            ("bob@example.com", "org-quota-forecast", "2"),
        ],
        "{seen:?}"
    );

    // Bob's link in the organization's email unsubscribes Bob, not the organization's owner.
    let bob = server
        .received()
        .into_iter()
        .find(|m| m.rcpt == ["bob@example.com"])
        .unwrap();
    assert_eq!(
        unsubscribe(&db, &Parsed::of(&bob).unsubscribe_token()),
        Ok(())
    );
    assert_eq!(
        alert_emails(&db),
        vec![
            (1, "all".to_string()),
            (2, "none".to_string()),
            (3, "all".to_string()),
            (4, "all".to_string()),
        ]
    );
}

/// As deployed (deploy/roles.sql): the daemon's role runs the alerts job with the secret as a
/// systemd credential, registering its key; the application's role applies the emailed token.
#[test]
fn under_the_deployed_roles_the_daemon_registers_its_key_and_the_application_applies_the_token() {
    let roles = RolesDb::new("forecast_alerts", "usage");
    roles.migrate_as_owner();
    roles
        .admin()
        .batch_execute(
            "INSERT INTO usage.plans (id, name) VALUES (1, 'free');
             INSERT INTO usage.plan_limits (plan_id, metric, period, kind, max_value)
                  VALUES (1, 'tokens', 'month', '', 1000);
             INSERT INTO usage.users (id, email, name, timezone, plan_id)
                  VALUES (1, 'ada@example.com', 'Ada', 'UTC', 1);
             INSERT INTO usage.usage_periods (user_id, org_id, period, period_start, period_end, tokens)
                  VALUES (1, 0, 'month', now() - interval '1 day',
                          now() - interval '1 day' + interval '1 month', 850);",
        )
        .unwrap();
    let credentials = tempfile::tempdir().unwrap();
    let secret_file = credentials.path().join("unsubscribe-secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(
        &secret_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let server = SmtpServer::start();
    let mut command = roles.binary_as(&roles.worker);
    server.configure_env(&mut command);
    command
        .env(URL_KEY, UNSUBSCRIBE_URL)
        .env("CREDENTIALS_DIRECTORY", credentials.path())
        .args(["--run", "alerts"]);
    let out = support::output(command);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(!out.stderr.contains(&SECRET[..16]), "{}", out.stderr);

    let token = token_of_the_email(&server);
    let mut app = db::connect(&roles.url_as(&roles.writer)).expect("connect as the application");
    assert_eq!(
        outcome(
            &mut app,
            &format!("SELECT * FROM usage.usage_unsubscribe('{token}')")
        ),
        Ok(())
    );
    assert_eq!(
        text(
            &mut roles.admin(),
            "SELECT alert_emails AS t FROM usage.users WHERE id = 1"
        ),
        "none"
    );
}

// ---- 5. preferences ----

fn grant(db: &TestDb, who: &str, amount: i64, starts: &str) -> i64 {
    db.count(&format!(
        "SELECT usage_grant({who}, p_metric => 'tokens', p_amount => {amount},
                           p_starts_at => '{starts}', p_expires_at => '2027-01-01T00:00:00Z') AS n"
    ))
}

#[test]
fn each_preference_gets_its_kind_of_alert_email_and_every_webhook_still_goes() {
    let receiver = Receiver::start(&[SECRET_A], &[]);
    let (db, server, ctx) = seeded_with_smtp_and(|s| forecasting(s, None, Some(&receiver)));
    // Dee is on the plan too, with her alerts off.
    db.execute("UPDATE users SET plan_id = 1 WHERE id = 4");
    assert_eq!(set_alert_emails(&db, 1, "quota"), "quota");
    assert_eq!(set_alert_emails(&db, 2, "credit"), "credit");
    assert_eq!(set_alert_emails(&db, 3, "none"), "none");
    assert_eq!(set_alert_emails(&db, 4, "quota"), "none", "alerts are off");
    // Each bought 500 tokens and used 1,450: the quota is exhausted (95 %) and 10 % of the
    // credit is left (credit.low).
    let mut grants = Vec::new();
    for user in 1..=4 {
        grants.push(grant(
            &db,
            &format!("p_user_id => {user}"),
            500,
            "2026-11-01T00:00:00Z",
        ));
        event(
            &db,
            user,
            None,
            "ai_response",
            1_450,
            "2026-11-10T09:00:00Z",
        );
    }
    add_new_events_to_periods(&mut db.conn());

    // The dry run and the deciding run both record what a preference leaves out as
    // unsubscribed from the start (not as an alert to send that is withdrawn later).
    let preview = JobKind::Alerts
        .run(
            &ctx,
            &mut db.conn(),
            at("2026-11-10T12:00:00Z"),
            &support::dry_run(),
        )
        .unwrap();
    let mut left_out: Vec<String> = report_lines(&preview)
        .into_iter()
        .filter_map(|l| {
            let (who, rest) = l.split_once(": would record as unsubscribed")?;
            let what = rest.split(": ").nth(1)?.split(" of ").next()?;
            Some(format!("{who}: {what}"))
        })
        .collect();
    left_out.sort();
    assert_eq!(
        left_out,
        vec![
            "user 1 a***@example.com: credit.low on monthly tokens",
            "user 2 b***@example.com: 95%",
            "user 3 c***@example.com: 95%",
            "user 3 c***@example.com: credit.low on monthly tokens",
        ],
        "{:?}",
        report_lines(&preview)
    );
    let decided = run(&db, &ctx, "2026-11-10T12:00:00Z");
    assert_eq!(
        decided.details["decided"]["unsubscribed"], 4,
        "{}",
        decided.details
    );
    assert_eq!(decided.details["unsubscribed_since_decided"], 0);
    run(&db, &ctx, "2026-11-10T12:05:00Z");

    let mut expected = Vec::new();
    for (user, credit, quota) in [
        (1, "unsubscribed", "sent"),
        (2, "sent", "unsubscribed"),
        (3, "unsubscribed", "unsubscribed"),
    ] {
        expected.extend([
            recorded(0, user, "credit.low", 20, credit),
            recorded(0, user, "quota", 80, "superseded"),
            recorded(0, user, "quota", 95, quota),
        ]);
    }
    expected.extend([
        recorded(0, 4, "credit.low", 20, "suppressed"),
        recorded(0, 4, "quota", 80, "suppressed"),
        recorded(0, 4, "quota", 95, "suppressed"),
    ]);
    assert_eq!(alerts(&db), expected);
    assert_eq!(
        mailed(&server),
        vec![
            (
                "ada@example.com".to_string(),
                "<quota-alert.1.tokens.month.all.20261031T230000Z.95@example.com>".to_string()
            ),
            (
                "bob@example.com".to_string(),
                format!(
                    "<credit-alert.2.tokens.month.all.low.{}@example.com>",
                    grants[1]
                )
            ),
        ]
    );
    // Webhooks are for the application: every alert not suppressed, whatever the preference.
    let mut expected_hooks = Vec::new();
    for user in 1..=3 {
        expected_hooks.push((user, "credit.low".to_string(), None));
        expected_hooks.push((user, "quota.exhausted".to_string(), Some(95)));
    }
    assert_eq!(webhooks(&receiver), expected_hooks);
}

#[test]
fn a_pending_alert_whose_recipient_unsubscribes_before_delivery_is_not_sent() {
    let (db, mut server, ctx) = seeded_with_smtp_and(|_| {});
    for user in [1, 2] {
        set_tokens(
            &db,
            Subject::User(user),
            "2026-11-01T00:00:00Z",
            "2026-12-01T00:00:00Z",
            900,
        );
    }
    server.stop();
    run(&db, &ctx, "2026-11-10T12:00:00Z");
    assert_eq!(
        alerts(&db),
        vec![
            recorded(0, 1, "quota", 80, "pending"),
            recorded(0, 2, "quota", 80, "pending"),
        ]
    );

    // Ada keeps only credit alerts before the retry.
    assert_eq!(set_alert_emails(&db, 1, "credit"), "credit");
    server.restart();
    let report = run(&db, &ctx, "2026-11-10T13:00:00Z");
    run(&db, &ctx, "2026-11-10T14:00:00Z");

    assert_eq!(
        alerts(&db),
        vec![
            recorded(0, 1, "quota", 80, "unsubscribed"),
            recorded(0, 2, "quota", 80, "sent"),
        ]
    );
    assert_eq!(server.recipients(), vec!["bob@example.com"]);
    assert_eq!(report.details["unsubscribed_since_decided"], 1);
    assert_eq!(report.details["sent"], 1);
}

#[test]
fn an_organizations_alerts_follow_each_recipients_own_preference() {
    let receiver = Receiver::start(&[SECRET_A], &[]);
    let (db, server, ctx) = seeded_with_smtp_and(|s| forecasting(s, None, Some(&receiver)));
    // Acme: owner Ada wants credit alerts only, admin Bob quota alerts only, admin Dee has her
    // alerts off (her preference stays `all`).
    set_alert_emails(&db, 1, "credit");
    set_alert_emails(&db, 2, "quota");
    grant(&db, "p_org_id => 7", 300, "2026-11-01T05:00:00Z");
    event(
        &db,
        3,
        Some(7),
        "ai_response",
        1_400,
        "2026-11-10T15:00:00Z",
    );
    add_new_events_to_periods(&mut db.conn());
    run(&db, &ctx, "2026-11-10T18:00:00Z");
    run(&db, &ctx, "2026-11-10T18:05:00Z");

    let mut expected = Vec::new();
    for (user, credit, quota) in [
        (1, "sent", "unsubscribed"),
        (2, "unsubscribed", "sent"),
        (4, "suppressed", "suppressed"),
    ] {
        let lower = if user == 4 {
            "suppressed"
        } else {
            "superseded"
        };
        expected.extend([
            recorded(7, user, "credit.depleted", 100, credit),
            recorded(7, user, "credit.low", 20, lower),
            recorded(7, user, "quota", 80, lower),
            recorded(7, user, "quota", 95, quota),
        ]);
    }
    assert_eq!(alerts(&db), expected);
    let mail = mailed(&server);
    assert_eq!(mail.len(), 2, "{mail:?}");
    assert_eq!(mail[0].0, "ada@example.com");
    assert!(
        mail[0]
            .1
            .starts_with("<org-credit-alert.7.1.tokens.month.all.depleted."),
        "{mail:?}"
    );
    assert_eq!(
        mail[1],
        (
            "bob@example.com".to_string(),
            "<org-quota-alert.7.2.tokens.month.all.20261101T040000Z.95@example.com>".to_string()
        )
    );
    // One event per threshold for the organization, whoever is emailed.
    assert_eq!(
        webhooks(&receiver),
        vec![
            (7, "credit.depleted".to_string(), None),
            (7, "quota.exhausted".to_string(), Some(95)),
        ]
    );
}

// ---- 6. --usage ----

/// `--usage 42` with `extra` arguments: its stdout.
fn usage(db: &TestDb, extra: &[&str]) -> String {
    let mut command = db.binary();
    command.args(["--usage", "42"]).args(extra);
    support::stdout_of_success(&mut command)
}

#[test]
fn usage_shows_the_alert_email_preference_and_the_projection_under_the_limit() {
    let db = TestDb::new();
    db.execute(
        "INSERT INTO plans (id, name) VALUES (1, 'free');
         INSERT INTO plan_limits (plan_id, metric, period, kind, max_value)
         VALUES (1, 'tokens', 'month', '', 1000);",
    );
    db.add_subject(Subject::User(42), "UTC", None, Some(1));
    assert_eq!(set_alert_emails(&db, 42, "quota"), "quota");
    // 500 of 1,000 in the day since the month started: at that pace 100% a day from now.
    let (start, end) = month_around_now(&db);
    set_tokens(&db, Subject::User(42), &start, &end, 500);
    let start = at(&start);
    let before = db_now(&db);
    let table = usage(&db, &[]);
    let json: Value = serde_json::from_str(&usage(&db, &["--json"])).unwrap();
    let after = db_now(&db);
    // usage_projected_exhaustion: start + 1000 / 500 × (now − start), now between the two.
    let earliest = start + (before - start) * 2 - chrono::Duration::seconds(1);
    let latest = start + (after - start) * 2 + chrono::Duration::seconds(1);

    let heading = table.lines().next().unwrap_or_default();
    assert!(
        heading.contains("alert emails quota (quota and forecast alerts only)"),
        "{table}"
    );
    let pace = table
        .lines()
        .find_map(|l| l.trim().strip_prefix("at this pace 100% on "))
        .unwrap_or_else(|| panic!("no projection line:\n{table}"));
    let shown = chrono::NaiveDateTime::parse_from_str(
        pace.strip_suffix(" UTC")
            .unwrap_or_else(|| panic!("{pace}")),
        "%Y-%m-%d %H:%M",
    )
    .unwrap_or_else(|e| panic!("{pace}: {e}"))
    .and_utc();
    let minute = |t: DateTime<Utc>| t.with_second(0).unwrap().with_nanosecond(0).unwrap();
    assert!(
        minute(earliest) <= shown && shown <= minute(latest),
        "{shown} is not between {earliest} and {latest}:\n{table}"
    );

    assert_eq!(json["alert_emails"], "quota", "{json}");
    let projected = month_tokens(&json)["projected_exhaustion"]
        .as_str()
        .unwrap_or_else(|| panic!("{json}"));
    let projected = at(projected);
    assert!(
        earliest <= projected && projected <= latest,
        "{projected} is not between {earliest} and {latest}"
    );

    // Alerts off: the preference in effect is none. At the limit: no day ahead to name.
    db.execute("UPDATE users SET alerts_enabled = false WHERE id = 42");
    set_tokens(&db, Subject::User(42), &start.to_rfc3339(), &end, 1_000);
    let table = usage(&db, &[]);
    assert!(
        table
            .lines()
            .next()
            .unwrap_or_default()
            .ends_with("alert emails none"),
        "{table}"
    );
    assert!(!table.contains("at this pace"), "{table}");
    let json: Value = serde_json::from_str(&usage(&db, &["--json"])).unwrap();
    assert_eq!(json["alert_emails"], "none", "{json}");
}

// ---- 7. configuration ----

/// `--check-config` with the environment `envs` (and a database URL): exit code, stdout
/// and stderr.
fn check_config(envs: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = support::binary();
    command
        .arg("--check-config")
        .env(
            "USAGE_WORKER__DATABASE__URL",
            "postgres://worker@localhost/usage",
        )
        .env("USAGE_WORKER__MAIL__TRANSPORT", "log");
    for (key, value) in envs {
        command.env(key, value);
    }
    let out = support::output(command);
    (out.code, out.stdout, out.stderr)
}

const URL_KEY: &str = "USAGE_WORKER__MAIL__UNSUBSCRIBE_URL";
const SECRET_KEY: &str = "USAGE_WORKER__MAIL__UNSUBSCRIBE_SECRET";
const SECRET_FILE_KEY: &str = "USAGE_WORKER__MAIL__UNSUBSCRIBE_SECRET_FILE";

#[test]
fn unsubscribe_and_forecast_settings_that_cannot_work_exit_78_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let short_file = dir.path().join("short-secret");
    std::fs::write(&short_file, format!("{}\n", &SECRET[..31])).unwrap();
    let good_file = dir.path().join("unsubscribe-secret");
    std::fs::write(&good_file, format!("{SECRET}\n")).unwrap();
    let short_file = short_file.to_str().unwrap();

    let refused: [(&[(&str, &str)], &str); 10] = [
        (
            &[
                (URL_KEY, "http://example.com/email/unsubscribe"),
                (SECRET_KEY, SECRET),
            ],
            "mail.unsubscribe_url",
        ),
        (
            &[
                (URL_KEY, "https:///email/unsubscribe"),
                (SECRET_KEY, SECRET),
            ],
            "mail.unsubscribe_url",
        ),
        (
            &[(URL_KEY, "not a url"), (SECRET_KEY, SECRET)],
            "mail.unsubscribe_url",
        ),
        (
            &[(URL_KEY, "/email/unsubscribe"), (SECRET_KEY, SECRET)],
            "mail.unsubscribe_url",
        ),
        (&[(URL_KEY, UNSUBSCRIBE_URL)], "mail.unsubscribe_secret"),
        (
            &[(URL_KEY, UNSUBSCRIBE_URL), (SECRET_KEY, &SECRET[..31])],
            "mail.unsubscribe_secret",
        ),
        (
            &[(URL_KEY, UNSUBSCRIBE_URL), (SECRET_FILE_KEY, short_file)],
            "mail.unsubscribe_secret",
        ),
        (
            &[
                (URL_KEY, UNSUBSCRIBE_URL),
                (SECRET_FILE_KEY, "/nonexistent/unsubscribe-secret"),
            ],
            "mail.unsubscribe_secret_file",
        ),
        (
            &[("USAGE_WORKER__ALERTS__FORECAST_HOURS", "0")],
            "alerts.forecast_hours",
        ),
        (
            &[("USAGE_WORKER__ALERTS__FORECAST_HOURS", "8809")],
            "alerts.forecast_hours",
        ),
    ];
    for (envs, key) in refused {
        let (code, stdout, stderr) = check_config(envs);
        assert_eq!(code, 78, "{envs:?}: {stdout}{stderr}");
        assert!(
            stderr.contains(key),
            "{envs:?} does not name {key}: {stderr}"
        );
        assert!(
            !stderr.contains(&SECRET[..31]),
            "the secret leaked: {stderr}"
        );
    }

    // What works: a 32-character secret inline, from a file or as the systemd credential, and
    // forecast_hours from 1 to 8,808; the secret is never printed.
    let credentials = dir.path().to_str().unwrap();
    let accepted: [&[(&str, &str)]; 5] = [
        &[(URL_KEY, UNSUBSCRIBE_URL), (SECRET_KEY, &SECRET[..32])],
        &[
            (URL_KEY, UNSUBSCRIBE_URL),
            (SECRET_FILE_KEY, good_file.to_str().unwrap()),
        ],
        &[
            (URL_KEY, UNSUBSCRIBE_URL),
            ("CREDENTIALS_DIRECTORY", credentials),
        ],
        &[("USAGE_WORKER__ALERTS__FORECAST_HOURS", "1")],
        &[("USAGE_WORKER__ALERTS__FORECAST_HOURS", "8808")],
    ];
    for envs in accepted {
        let (code, stdout, stderr) = check_config(envs);
        assert_eq!(code, 0, "{envs:?}: {stdout}{stderr}");
        assert!(
            !stdout.contains(&SECRET[..20]) && !stderr.contains(&SECRET[..20]),
            "the secret leaked: {stdout}{stderr}"
        );
    }
}
