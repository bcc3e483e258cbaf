//! The alert email's subject, text and HTML bodies: minijinja templates compiled into the
//! binary, each replaceable by a file of the same name in `mail.templates_dir`. An alert on
//! an organization's quota has templates of its own (`org_quota_alert.*`): it speaks of the
//! organization, not of "your" quota, and overriding one set leaves the other as it is. A
//! credit alert (the balance of grants on top of the plan) has a third set, `credit_alert.*`,
//! and a forecast (at this pace the limit is reached soon) a fourth, `forecast_alert.*`.
//!
//! The HTML template is auto-escaped (its name ends in `.html`), so a stored name such as
//! `<script>` arrives as text. Control characters are removed from every value before
//! rendering and from the rendered subject, so nothing stored can start a new header.

use std::path::{Path, PathBuf};

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

pub const SUBJECT: &str = "quota_alert.subject.txt";
pub const TEXT: &str = "quota_alert.txt";
pub const HTML: &str = "quota_alert.html";
pub const ORG_SUBJECT: &str = "org_quota_alert.subject.txt";
pub const ORG_TEXT: &str = "org_quota_alert.txt";
pub const ORG_HTML: &str = "org_quota_alert.html";
pub const CREDIT_SUBJECT: &str = "credit_alert.subject.txt";
pub const CREDIT_TEXT: &str = "credit_alert.txt";
pub const CREDIT_HTML: &str = "credit_alert.html";
pub const FORECAST_SUBJECT: &str = "forecast_alert.subject.txt";
pub const FORECAST_TEXT: &str = "forecast_alert.txt";
pub const FORECAST_HTML: &str = "forecast_alert.html";

/// The personal templates, then the organization's, then the credit alerts' and the
/// forecasts' (each for personal and organizations' alike), each as subject, text, HTML.
const BUILT_IN: [(&str, &str); 12] = [
    (SUBJECT, include_str!("templates/quota_alert.subject.txt")),
    (TEXT, include_str!("templates/quota_alert.txt")),
    (HTML, include_str!("templates/quota_alert.html")),
    (
        ORG_SUBJECT,
        include_str!("templates/org_quota_alert.subject.txt"),
    ),
    (ORG_TEXT, include_str!("templates/org_quota_alert.txt")),
    (ORG_HTML, include_str!("templates/org_quota_alert.html")),
    (
        CREDIT_SUBJECT,
        include_str!("templates/credit_alert.subject.txt"),
    ),
    (CREDIT_TEXT, include_str!("templates/credit_alert.txt")),
    (CREDIT_HTML, include_str!("templates/credit_alert.html")),
    (
        FORECAST_SUBJECT,
        include_str!("templates/forecast_alert.subject.txt"),
    ),
    (FORECAST_TEXT, include_str!("templates/forecast_alert.txt")),
    (FORECAST_HTML, include_str!("templates/forecast_alert.html")),
];
/// Where the organization's templates start in `BUILT_IN`.
const ORG: usize = 3;
/// Where the credit alerts' templates start in `BUILT_IN`.
const CREDIT: usize = 6;
/// Where the forecasts' templates start in `BUILT_IN`.
const FORECAST: usize = 9;

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read template {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("template {name} ({origin}): {message}")]
    Invalid {
        name: &'static str,
        origin: String,
        message: String,
    },
}

/// Everything an alert email says, already formatted for people (units, the user's time zone).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AlertContent {
    /// The user's name, or empty.
    pub name: String,
    /// The threshold crossed, e.g. 80.
    pub threshold: u32,
    /// Usage as a whole percentage of the limit, rounded down, e.g. 97.
    pub percent: u64,
    /// `requests`, `messages`, `tokens`, `bytes` or `cost`.
    pub metric: String,
    /// The metric as a noun in "your monthly token quota".
    pub metric_noun: String,
    /// `day` or `month`.
    pub period: String,
    /// `daily` or `monthly`.
    pub period_adjective: String,
    /// The event kind a kind-scoped limit applies to, or empty for all kinds.
    pub kind: String,
    /// The kind in words (`image generation`), or empty.
    pub kind_label: String,
    pub used: String,
    pub limit: String,
    pub remaining: String,
    /// When the period ends, in the user's own time zone.
    pub resets_at: String,
    pub timezone: String,
    /// The day the limit will be reached at the period's pace so far (`Saturday 19
    /// December`), in the same zone; unset when not before the reset, or already reached.
    pub projected_on: Option<String>,
    /// The same instant in full, as `resets_at` is written.
    pub projected_at: Option<String>,
    pub upgrade_url: Option<String>,
    pub preferences_url: Option<String>,
    /// Set for an alert on an organization's quota: it picks the `org_quota_alert.*` templates.
    pub organization: Option<OrganizationContent>,
    /// Set for a credit alert (a grant's balance): it picks the `credit_alert.*` templates.
    pub credit: Option<CreditContent>,
    /// A forecast (`quota.forecast`): it picks the `forecast_alert.*` templates.
    pub forecast: bool,
}

/// What a credit alert says about the balance of a subject's grants.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CreditContent {
    /// `credit.low`, `credit.depleted` or `credit.recovered`.
    pub event: String,
    /// `low`, `depleted` or `recovered`.
    pub state: String,
    /// What the active grants gave in all, e.g. `500,000 tokens`.
    pub granted: String,
    /// What they have given so far.
    pub used: String,
    /// What is left.
    pub balance: String,
    /// What is left as a whole percentage of what was granted, rounded down.
    pub percent_left: u64,
    /// The threshold of `credit.low`, e.g. 20.
    pub low_percent: u32,
    /// When the last of them expires, in the subject's own time zone.
    pub expires_at: String,
}

/// Whose quota an organization's alert is about, and who used it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OrganizationContent {
    pub id: i64,
    /// The organization's name, or `organization <id>` when it has none.
    pub name: String,
    /// What makes the recipient receive it: `owner` or `admin`.
    pub role: String,
    /// The members who used most of the metric in the period, largest first (at most three).
    pub top_members: Vec<MemberUsage>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MemberUsage {
    /// The member's name, or `user <id>` when it has none.
    pub name: String,
    /// Their usage with its unit, e.g. `41,200 tokens`.
    pub used: String,
    /// Whether the member is the recipient (the templates then say "you").
    pub you: bool,
}

/// A rendered email: one-line subject, text and HTML bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

pub struct Templates {
    env: Environment<'static>,
    origins: [String; 12],
}

impl Templates {
    /// The built-in templates, each replaced by `dir/<name>` when that file exists.
    pub fn load(dir: Option<&Path>) -> Result<Templates, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        let mut origins: [String; 12] = Default::default();
        for (i, (name, built_in)) in BUILT_IN.into_iter().enumerate() {
            let custom = dir.map(|d| d.join(name)).filter(|p| p.exists());
            let (source, origin) = match custom {
                Some(path) => {
                    let text = std::fs::read_to_string(&path).map_err(|e| TemplateError::Read {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
                    (text, path.display().to_string())
                }
                None => (built_in.to_string(), "built in".to_string()),
            };
            env.add_template_owned(name, source)
                .map_err(|e| TemplateError::Invalid {
                    name,
                    origin: origin.clone(),
                    message: e.to_string(),
                })?;
            origins[i] = origin;
        }
        Ok(Templates { env, origins })
    }

    /// Renders the three parts, with the organization's templates when the content has an
    /// organization. Every string is stripped of control characters first.
    pub fn render(&self, content: &AlertContent) -> Result<Rendered, TemplateError> {
        let mut content = content.clone();
        content.name = single_line(&content.name);
        content.kind_label = single_line(&content.kind_label);
        if let Some(org) = content.organization.as_mut() {
            org.name = single_line(&org.name);
            for member in &mut org.top_members {
                member.name = single_line(&member.name);
            }
        }
        let first = if content.credit.is_some() {
            CREDIT
        } else if content.forecast {
            FORECAST
        } else if content.organization.is_some() {
            ORG
        } else {
            0
        };
        let subject = single_line(&self.render_one(first, &content, None)?);
        let text = self.render_one(first + 1, &content, Some(&subject))?;
        let html = self.render_one(first + 2, &content, Some(&subject))?;
        Ok(Rendered {
            subject,
            text,
            html,
        })
    }

    /// Renders fixed samples through both sets, so a broken override is found at startup,
    /// not at the first alert; returns the personal one.
    pub fn render_sample(&self) -> Result<Rendered, TemplateError> {
        self.render(&sample_org_content())?;
        self.render(&sample_credit_content())?;
        self.render(&AlertContent {
            organization: sample_org_content().organization,
            ..sample_credit_content()
        })?;
        self.render(&sample_forecast_content())?;
        self.render(&AlertContent {
            organization: sample_org_content().organization,
            ..sample_forecast_content()
        })?;
        self.render(&sample_content())
    }

    fn render_one(
        &self,
        index: usize,
        content: &AlertContent,
        subject: Option<&str>,
    ) -> Result<String, TemplateError> {
        let name = BUILT_IN[index].0;
        let invalid = |e: minijinja::Error| TemplateError::Invalid {
            name,
            origin: self.origins[index].clone(),
            message: format!("{e:#}"),
        };
        let template = self.env.get_template(name).map_err(invalid)?;
        let ctx = minijinja::context! { subject => subject.unwrap_or_default(), ..minijinja::Value::from_serialize(content) };
        let out = template.render(ctx).map_err(invalid)?;
        Ok(out)
    }
}

/// The content used to check templates at startup and in the snapshot tests.
pub fn sample_content() -> AlertContent {
    AlertContent {
        name: "Ada Lovelace".into(),
        threshold: 80,
        percent: 83,
        metric: "tokens".into(),
        metric_noun: "token".into(),
        period: "month".into(),
        period_adjective: "monthly".into(),
        kind: String::new(),
        kind_label: String::new(),
        used: "83,250 tokens".into(),
        limit: "100,000 tokens".into(),
        remaining: "16,750 tokens".into(),
        resets_at: "Tuesday 1 December 2026, 00:00 CET (Europe/Berlin)".into(),
        timezone: "Europe/Berlin".into(),
        projected_on: Some("Saturday 28 November".into()),
        projected_at: Some("Saturday 28 November 2026, 09:40 CET (Europe/Berlin)".into()),
        upgrade_url: Some("https://example.com/billing".into()),
        preferences_url: Some("https://example.com/settings/notifications".into()),
        organization: None,
        credit: None,
        forecast: false,
    }
}

/// The sample of a forecast: at this pace Ada's monthly tokens run out on the 28th.
pub fn sample_forecast_content() -> AlertContent {
    AlertContent {
        threshold: 100,
        percent: 61,
        used: "61,000 tokens".into(),
        remaining: "39,000 tokens".into(),
        forecast: true,
        ..sample_content()
    }
}

/// The sample of a credit alert: Ada's token grants are low.
pub fn sample_credit_content() -> AlertContent {
    AlertContent {
        threshold: 20,
        credit: Some(CreditContent {
            event: "credit.low".into(),
            state: "low".into(),
            granted: "500,000 tokens".into(),
            used: "420,000 tokens".into(),
            balance: "80,000 tokens".into(),
            percent_left: 16,
            low_percent: 20,
            expires_at: "Saturday 6 March 2027, 15:00 CET (Europe/Berlin)".into(),
        }),
        ..sample_content()
    }
}

/// The sample of an organization's alert: Ada, an owner, among its largest users.
pub fn sample_org_content() -> AlertContent {
    let member = |name: &str, used: &str, you: bool| MemberUsage {
        name: name.into(),
        used: used.into(),
        you,
    };
    AlertContent {
        organization: Some(OrganizationContent {
            id: 7,
            name: "Analytical Engines".into(),
            role: "owner".into(),
            top_members: vec![
                member("Charles Babbage", "41,200 tokens", false),
                member("Ada Lovelace", "30,050 tokens", true),
                member("Mary Somerville", "12,000 tokens", false),
            ],
        }),
        ..sample_content()
    }
}

/// Replaces control characters (CR, LF, TAB, …) with spaces and collapses runs of spaces.
pub fn single_line(text: &str) -> String {
    let replaced: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    replaced.split_whitespace().collect::<Vec<_>>().join(" ")
}
