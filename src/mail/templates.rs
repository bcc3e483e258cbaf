//! The alert email's subject, text and HTML bodies: minijinja templates compiled into the
//! binary, each replaceable by a file of the same name in `mail.templates_dir`.
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

const BUILT_IN: [(&str, &str); 3] = [
    (SUBJECT, include_str!("templates/quota_alert.subject.txt")),
    (TEXT, include_str!("templates/quota_alert.txt")),
    (HTML, include_str!("templates/quota_alert.html")),
];

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
    pub upgrade_url: Option<String>,
    pub preferences_url: Option<String>,
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
    origins: [String; 3],
}

impl Templates {
    /// The built-in templates, each replaced by `dir/<name>` when that file exists.
    pub fn load(dir: Option<&Path>) -> Result<Templates, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        let mut origins: [String; 3] = Default::default();
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

    /// Renders the three parts. Every string is stripped of control characters first.
    pub fn render(&self, content: &AlertContent) -> Result<Rendered, TemplateError> {
        let mut content = content.clone();
        content.name = single_line(&content.name);
        content.kind_label = single_line(&content.kind_label);
        let subject = single_line(&self.render_one(0, SUBJECT, &content, None)?);
        let text = self.render_one(1, TEXT, &content, Some(&subject))?;
        let html = self.render_one(2, HTML, &content, Some(&subject))?;
        Ok(Rendered {
            subject,
            text,
            html,
        })
    }

    /// Renders a fixed sample, so a broken override is found at startup, not at the first alert.
    pub fn render_sample(&self) -> Result<Rendered, TemplateError> {
        self.render(&sample_content())
    }

    fn render_one(
        &self,
        index: usize,
        name: &'static str,
        content: &AlertContent,
        subject: Option<&str>,
    ) -> Result<String, TemplateError> {
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
        upgrade_url: Some("https://example.com/billing".into()),
        preferences_url: Some("https://example.com/settings/notifications".into()),
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
