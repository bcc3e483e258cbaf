//! Typed settings, layered: built-in defaults < config file < `DATABASE_URL` < environment
//! variables `USAGE_WORKER__SECTION__KEY`.
//!
//! Types say most of what is valid (durations, percentages, non-zero counts, enums); each
//! section's `validate` checks the rest. A bad value is a [`ConfigError`] that names the full
//! key and the expected form (the binary exits 78 on it). Environment values are taken as
//! written: a string stays the exact string, and a numeric key still accepts `8`.

mod aggregate;
mod alerts;
mod database;
mod duration;
mod embedded;
mod ingest;
mod jobs;
mod log;
mod mail;
mod metrics;
mod partitions;
mod retention;
mod schema_name;
mod secrets;
mod webhooks;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use aggregate::AggregateSettings;
pub use alerts::{AlertSettings, Percent};
pub use database::DatabaseSettings;
pub use duration::HumanDuration;
pub use embedded::{EmbeddedSettings, default_demo_dir};
pub use ingest::IngestSettings;
pub use jobs::{JobPlan, JobSettings, SchedulerSettings};
pub use log::{LogFormat, LogSettings};
pub use mail::{
    FileMailSettings, MailSettings, MailTransportKind, SmtpSettings, SmtpTls, is_loopback_host,
};
pub use metrics::MetricsSettings;
pub use partitions::PartitionSettings;
pub use retention::RetentionSettings;
pub use schema_name::SchemaName;
pub use secrets::read_secret;
pub use webhooks::{
    AlertChannel, SECRET_PREFIX, SecretBytes, WEBHOOK_EVENTS, WebhookEndpoint, decode_secret,
};

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/usage-worker/config.toml";
/// Prefix of environment overrides: `USAGE_WORKER__DATABASE__URL`.
pub const ENV_PREFIX: &str = "USAGE_WORKER";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration key `{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("configuration file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("configuration: {0}")]
    Other(String),
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub jobs: BTreeMap<String, JobSettings>,
    pub scheduler: SchedulerSettings,
    pub log: LogSettings,
    pub embedded: EmbeddedSettings,
    pub partitions: PartitionSettings,
    pub mail: MailSettings,
    pub alerts: AlertSettings,
    pub retention: RetentionSettings,
    pub aggregate: AggregateSettings,
    pub ingest: IngestSettings,
    pub metrics: MetricsSettings,
}

impl Settings {
    /// Loads the layered configuration. `path` is `--config`; without it the default path is
    /// read when it exists.
    pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// As [`Settings::load`], with the environment given explicitly (tests).
    pub fn load_with_env(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let file = config_file(path)?;
        let layers = layered_sources(file.as_deref(), env)?;
        let settings: Settings =
            serde_path_to_error::deserialize(layers).map_err(deserialize_error)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what the types cannot; the first bad value is returned with its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.database.validate()?;
        jobs::validate_job_keys(&self.jobs)?;
        self.job_plans()?;
        self.scheduler.validate()?;
        self.log.validate()?;
        self.partitions.validate()?;
        self.retention.validate()?;
        self.aggregate.validate()?;
        self.ingest.validate()?;
        self.embedded.validate()?;
        self.metrics.validate()?;
        self.mail.validate()?;
        self.alerts.validate()
    }

    /// The effective configuration as TOML, secrets redacted (`--check-config`).
    pub fn to_redacted_toml(&self) -> String {
        let mut copy = self.clone();
        // Every job under its one documented spelling, its name (`[jobs.reset-daily]`).
        copy.jobs.clear();
        for plan in self.job_plans().unwrap_or_default() {
            let entry = copy.jobs.entry(plan.kind.name().to_string()).or_default();
            entry.schedule = Some(
                plan.schedule
                    .as_ref()
                    .map(|s| s.source().to_string())
                    .unwrap_or_default(),
            );
            entry.timeout = Some(HumanDuration(plan.timeout));
        }
        toml::to_string_pretty(&copy).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// `--config` must exist; without it the default path is used when present.
fn config_file(path: Option<&Path>) -> Result<Option<PathBuf>, ConfigError> {
    match path {
        Some(p) if !p.exists() => Err(ConfigError::File {
            path: p.to_path_buf(),
            message: "no such file (check --config)".into(),
        }),
        Some(p) => Ok(Some(p.to_path_buf())),
        None => Ok(Some(PathBuf::from(DEFAULT_CONFIG_PATH)).filter(|p| p.exists())),
    }
}

/// The file, `DATABASE_URL` and the `USAGE_WORKER__…` variables, merged in that order.
fn layered_sources(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<config::Config, ConfigError> {
    let mut builder = config::Config::builder();
    if let Some(file) = file {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError::File {
            path: file.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::File {
                    path: file.to_path_buf(),
                    message: e.to_string(),
                })?;
        jobs::normalize_job_keys(&mut table)?;
        let text = toml::to_string(&table).map_err(|e| ConfigError::File {
            path: file.to_path_buf(),
            message: e.to_string(),
        })?;
        builder = builder.add_source(config::File::from_str(&text, config::FileFormat::Toml));
    }
    let env: BTreeMap<String, String> = env.into_iter().collect();
    let prefix = format!("{ENV_PREFIX}__");
    let mut prefixed: config::Map<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // `DATABASE_URL` sits between the file and the prefixed variables, as documented.
    if let Some(url) = env.get("DATABASE_URL").filter(|u| !u.is_empty()) {
        prefixed
            .entry(format!("{prefix}DATABASE__URL"))
            .or_insert_with(|| url.clone());
    }
    // No `try_parsing`: it would turn a password `0123` into `123`. Values stay strings and
    // the deserializer converts them where a number or a boolean is expected.
    builder = builder.add_source(
        config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .source(Some(prefixed)),
    );
    builder.build().map_err(|e| match e {
        config::ConfigError::FileParse { cause, .. } => ConfigError::File {
            path: file.map(Path::to_path_buf).unwrap_or_default(),
            message: cause.to_string(),
        },
        other => ConfigError::Other(other.to_string()),
    })
}

/// A value the types refuse, named by its full key (`mail.smtp.port`). List indexes are left
/// out of the key: the message names the bad element.
fn deserialize_error(error: serde_path_to_error::Error<config::ConfigError>) -> ConfigError {
    let key = error
        .path()
        .iter()
        .filter_map(|segment| match segment {
            serde_path_to_error::Segment::Map { key } => Some(key.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(".");
    let message = describe(error.into_inner());
    if key.is_empty() {
        return ConfigError::Other(message);
    }
    // serde's wording for a key `deny_unknown_fields` refuses.
    if message.starts_with("unknown field") {
        return ConfigError::invalid(
            key,
            format!(
                "unknown key ({message}); check the spelling against deploy/config.example.toml"
            ),
        );
    }
    ConfigError::invalid(key, message)
}

/// The reason alone: the key is already known, so the `config` crate's own key is dropped.
fn describe(error: config::ConfigError) -> String {
    match error {
        config::ConfigError::Type {
            unexpected,
            expected,
            ..
        } => format!("got {unexpected}, expected {expected}"),
        config::ConfigError::At { error, .. } => describe(*error),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
