//! Typed settings, layered: built-in defaults < config file < `DATABASE_URL` < environment
//! variables `USAGE_WORKER__SECTION__KEY`.
//!
//! Every value is validated before anything runs; a bad one is a [`ConfigError`] that names
//! the key and the expected form (the binary exits 78 on it).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::jobs::JobKind;
use crate::schedule::Schedule;

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
    pub metrics: MetricsSettings,
}

#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// libpq connection URL. A password in it is redacted wherever it is shown.
    #[serde(serialize_with = "serialize_redacted_url")]
    pub url: String,
    /// Password kept out of the URL; `password_file` or the systemd credential
    /// `database-password` are preferred.
    #[serde(serialize_with = "serialize_secret")]
    pub password: Option<SecretString>,
    pub password_file: Option<PathBuf>,
    pub pool_size: u32,
    pub connect_timeout: HumanDuration,
    pub migrate_on_start: bool,
}

/// Debug output shows the URL with its password redacted, like `--check-config` does.
impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &redact_url(&self.url))
            .field("password", &self.password)
            .field("password_file", &self.password_file)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("migrate_on_start", &self.migrate_on_start)
            .finish()
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            url: String::new(),
            password: None,
            password_file: None,
            pool_size: 8,
            connect_timeout: HumanDuration(Duration::from_secs(5)),
            migrate_on_start: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct JobSettings {
    /// Cron string (5 fields, or 6 with seconds), UTC. Empty disables the job.
    pub schedule: Option<String>,
    pub timeout: Option<HumanDuration>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerSettings {
    pub catch_up_horizon: HumanDuration,
    pub shutdown_grace: HumanDuration,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        SchedulerSettings {
            catch_up_horizon: HumanDuration(Duration::from_secs(7 * 86_400)),
            shutdown_grace: HumanDuration(Duration::from_secs(30)),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedSettings {
    /// Where `--demo` keeps its private cluster; default: `$TMPDIR/usage-worker-demo`.
    pub data_dir: Option<PathBuf>,
    /// Directory holding `initdb`, `pg_ctl` and `postgres`; default: found automatically.
    pub pg_bin_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PartitionSettings {
    pub months_ahead: u32,
}

impl Default for PartitionSettings {
    fn default() -> Self {
        PartitionSettings { months_ahead: 3 }
    }
}

/// How alert emails leave the daemon (`mail.transport`).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MailTransportKind {
    /// An SMTP relay (`[mail.smtp]`).
    Smtp,
    /// One `.eml` file per message in `mail.file.dir`.
    File,
    /// A redacted log line per message; nothing is delivered.
    Log,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailSettings {
    /// `smtp`, `file` or `log`. Unset: `smtp`, or `file` under `--demo`.
    pub transport: Option<MailTransportKind>,
    /// The `From` mailbox, e.g. `Example Usage <usage@example.com>`.
    pub from: String,
    pub reply_to: Option<String>,
    /// A directory whose `quota_alert.subject.txt`, `quota_alert.txt` or `quota_alert.html`
    /// replace the built-in templates.
    pub templates_dir: Option<PathBuf>,
    /// Links shown in the alert emails when set.
    pub upgrade_url: Option<String>,
    pub preferences_url: Option<String>,
    pub smtp: SmtpSettings,
    pub file: FileMailSettings,
}

impl Default for MailSettings {
    fn default() -> Self {
        MailSettings {
            transport: None,
            from: "usage-worker@localhost".into(),
            reply_to: None,
            templates_dir: None,
            upgrade_url: None,
            preferences_url: None,
            smtp: SmtpSettings::default(),
            file: FileMailSettings::default(),
        }
    }
}

impl MailSettings {
    pub fn transport_kind(&self) -> MailTransportKind {
        self.transport.unwrap_or(MailTransportKind::Smtp)
    }
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (required, never skipped). Port 587.
    Starttls,
    /// TLS from the first byte (SMTPS). Port 465.
    Tls,
    /// No encryption: loopback hosts only. Port 25.
    None,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpSettings {
    pub host: String,
    /// Default: 587 (starttls), 465 (tls) or 25 (none).
    pub port: Option<u16>,
    pub tls: SmtpTls,
    pub username: Option<String>,
    /// Kept out of logs; `password_file` or the systemd credential `smtp-password` are preferred.
    #[serde(serialize_with = "serialize_secret")]
    pub password: Option<SecretString>,
    pub password_file: Option<PathBuf>,
    /// Limit for connecting and for each SMTP command.
    pub timeout: HumanDuration,
    /// Pooled connections, and so the number of messages sent at once.
    pub pool_size: u32,
}

impl Default for SmtpSettings {
    fn default() -> Self {
        SmtpSettings {
            host: "localhost".into(),
            port: None,
            tls: SmtpTls::Starttls,
            username: None,
            password: None,
            password_file: None,
            timeout: HumanDuration(Duration::from_secs(30)),
            pool_size: 4,
        }
    }
}

impl SmtpSettings {
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        })
    }

    /// The SMTP password from `mail.smtp.password`, `mail.smtp.password_file`, or the systemd
    /// credential `smtp-password`.
    pub fn password(&self) -> Result<Option<SecretString>, ConfigError> {
        read_secret(
            "mail.smtp.password",
            self.password.as_ref(),
            self.password_file.as_deref(),
            "smtp-password",
        )
    }
}

/// True for `localhost` and loopback addresses: the only hosts `mail.smtp.tls = "none"` may use.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct FileMailSettings {
    /// Where the `file` transport writes `.eml` files. Default under `--demo`: the demo directory.
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertSettings {
    /// Percentages of a limit that trigger an email, once each per period.
    pub thresholds: Vec<u32>,
    /// Deliveries tried before an alert is `failed`.
    pub max_attempts: u32,
    /// An alert not delivered this long after its period ended is `expired`.
    pub expire_after: HumanDuration,
    /// First retry delay; doubled after every failed attempt up to `backoff_max`.
    pub backoff_base: HumanDuration,
    pub backoff_max: HumanDuration,
    /// How long a claimed (`sending`) alert is reserved before another run may retry it.
    pub lease: HumanDuration,
    /// Alerts claimed per batch.
    pub batch_size: u32,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            thresholds: vec![80, 95],
            max_attempts: 8,
            expire_after: HumanDuration(Duration::from_secs(24 * 3_600)),
            backoff_base: HumanDuration(Duration::from_secs(60)),
            backoff_max: HumanDuration(Duration::from_secs(3_600)),
            lease: HumanDuration(Duration::from_secs(15 * 60)),
            batch_size: 200,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    /// Raw usage events older than this many months are deleted.
    pub events_months: u32,
    /// Rows deleted per transaction when trimming.
    pub batch_size: u32,
    /// Longest wait for the brief exclusive lock a partition drop needs.
    pub lock_timeout: HumanDuration,
    /// Months of the daily token summary kept.
    pub token_usage_daily_months: u32,
    /// Months of closed quota periods kept.
    pub usage_periods_months: u32,
    /// Months of delivered, failed or otherwise finished alerts kept.
    pub quota_alerts_months: u32,
    pub job_runs_days: u32,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            events_months: 24,
            batch_size: 10_000,
            lock_timeout: HumanDuration(Duration::from_secs(5)),
            token_usage_daily_months: 24,
            usage_periods_months: 24,
            quota_alerts_months: 24,
            job_runs_days: 90,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggregateSettings {
    /// Most events added to the summary per transaction; a backlog takes several. One
    /// inserting transaction's events are never split, so a batch may exceed this.
    pub batch_events: i64,
}

impl Default for AggregateSettings {
    fn default() -> Self {
        AggregateSettings {
            batch_events: 200_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Address serving `/healthz` and `/metrics`, e.g. `127.0.0.1:9187`; unset or empty = off.
    pub listen: Option<String>,
}

impl MetricsSettings {
    /// The validated address, `None` when metrics are off.
    pub fn listen_address(&self) -> Option<std::net::SocketAddr> {
        self.listen
            .as_deref()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .and_then(|l| l.parse().ok())
    }
}

/// A duration written as `30s`, `15m`, `2h`, `7d` or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number
            .parse()
            .map_err(|_| format!("`{text}` is not a duration; expected e.g. 30s, 15m, 2h or 7d"))?;
        let seconds = match unit.trim() {
            "" | "s" => number,
            "m" => number * 60,
            "h" => number * 3_600,
            "d" => number * 86_400,
            other => {
                return Err(format!(
                    "unknown unit `{other}` in `{text}`; expected s, m, h or d (e.g. 30s, 7d)"
                ));
            }
        };
        Ok(HumanDuration(Duration::from_secs(seconds)))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        match secs {
            s if s != 0 && s % 86_400 == 0 => write!(f, "{}d", s / 86_400),
            s if s != 0 && s % 3_600 == 0 => write!(f, "{}h", s / 3_600),
            s if s != 0 && s % 60 == 0 => write!(f, "{}m", s / 60),
            s => write!(f, "{s}s"),
        }
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Seconds(s) => Ok(HumanDuration(Duration::from_secs(s))),
            Raw::Text(t) => HumanDuration::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

fn serialize_secret<S: Serializer>(
    secret: &Option<SecretString>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match secret {
        Some(_) => serializer.serialize_str("[redacted]"),
        None => serializer.serialize_none(),
    }
}

fn serialize_redacted_url<S: Serializer>(url: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&redact_url(url))
}

/// Hides the password of a `postgres://user:password@host/db` URL (and of a `password=`
/// parameter), so the URL can be logged and printed.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..]
            .find(['/', '?'])
            .map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                let start = rest_start + colon + 1;
                out.replace_range(start..rest_start + at, "***");
            }
        }
    }
    for key in ["password="] {
        let mut search_from = 0;
        while let Some(pos) = out[search_from..].find(key) {
            let start = search_from + pos + key.len();
            let end = out[start..]
                .find(['&', ' '])
                .map_or(out.len(), |i| start + i);
            out.replace_range(start..end, "***");
            search_from = start + 3;
        }
    }
    out
}

/// Defaults for each job: its cron schedule and timeout.
pub struct JobDefaults {
    pub schedule: &'static str,
    pub timeout: Duration,
}

/// A job's settings after validation.
#[derive(Debug, Clone)]
pub struct JobPlan {
    pub kind: JobKind,
    /// `None` = disabled (empty schedule string).
    pub schedule: Option<Schedule>,
    pub timeout: Duration,
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
        let mut builder = config::Config::builder();
        let file = match path {
            Some(p) => {
                if !p.exists() {
                    return Err(ConfigError::File {
                        path: p.to_path_buf(),
                        message: "no such file (check --config)".into(),
                    });
                }
                Some(p.to_path_buf())
            }
            None => Some(PathBuf::from(DEFAULT_CONFIG_PATH)).filter(|p| p.exists()),
        };
        if let Some(file) = &file {
            let text = std::fs::read_to_string(file).map_err(|e| ConfigError::File {
                path: file.clone(),
                message: e.to_string(),
            })?;
            builder = builder.add_source(config::File::from_str(&text, config::FileFormat::Toml));
        }
        let env: BTreeMap<String, String> = env.into_iter().collect();
        if let Some(url) = env.get("DATABASE_URL").filter(|u| !u.is_empty()) {
            builder = builder
                .set_override("database.url", url.as_str())
                .map_err(|e| ConfigError::Other(e.to_string()))?;
        }
        let prefixed: config::Map<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(prefixed)),
        );
        let built = builder.build().map_err(|e| map_config_error(e, &file))?;
        let settings: Settings = built
            .try_deserialize()
            .map_err(|e| map_config_error(e, &file))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every value; the first bad one is returned with its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.database.pool_size == 0 || self.database.pool_size > 200 {
            return Err(ConfigError::invalid(
                "database.pool_size",
                format!(
                    "{} is out of range; expected 1 to 200",
                    self.database.pool_size
                ),
            ));
        }
        let url = &self.database.url;
        let looks_like_postgres = url.is_empty()
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://")
            || url.contains('=');
        if !looks_like_postgres {
            return Err(ConfigError::invalid(
                "database.url",
                format!(
                    "`{}` is not a PostgreSQL URL; expected postgres://user@host:5432/dbname",
                    redact_url(&self.database.url)
                ),
            ));
        }
        for name in self.jobs.keys() {
            if JobKind::from_config_key(name).is_none() {
                return Err(ConfigError::invalid(
                    format!("jobs.{name}"),
                    format!(
                        "unknown job; expected one of: {}",
                        JobKind::ALL
                            .iter()
                            .map(|k| k.config_key())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        self.job_plans()?;
        if self.scheduler.shutdown_grace.0.is_zero() {
            return Err(ConfigError::invalid(
                "scheduler.shutdown_grace",
                "must be longer than 0s; expected e.g. 30s",
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(ConfigError::invalid(
                "log.level",
                format!(
                    "`{}` is not a level or filter ({e}); expected error, warn, info, debug, trace or e.g. usage_worker=debug",
                    self.log.level
                ),
            ));
        }
        if self.partitions.months_ahead > 120 {
            return Err(ConfigError::invalid(
                "partitions.months_ahead",
                "expected 0 to 120",
            ));
        }
        let retention = &self.retention;
        if retention.events_months == 0 {
            return Err(ConfigError::invalid(
                "retention.events_months",
                "0 would delete every event; expected a number of months, e.g. 24",
            ));
        }
        if retention.batch_size == 0 || retention.batch_size > 1_000_000 {
            return Err(ConfigError::invalid(
                "retention.batch_size",
                "expected 1 to 1,000,000 rows per transaction (default 10000)",
            ));
        }
        if retention.lock_timeout.0.is_zero() {
            return Err(ConfigError::invalid(
                "retention.lock_timeout",
                "must be longer than 0s; expected e.g. 5s",
            ));
        }
        for (key, months) in [
            (
                "retention.token_usage_daily_months",
                retention.token_usage_daily_months,
            ),
            (
                "retention.usage_periods_months",
                retention.usage_periods_months,
            ),
            (
                "retention.quota_alerts_months",
                retention.quota_alerts_months,
            ),
        ] {
            if months == 0 {
                return Err(ConfigError::invalid(
                    key,
                    "0 would delete everything; expected a number of months, e.g. 24",
                ));
            }
        }
        if retention.job_runs_days == 0 {
            return Err(ConfigError::invalid(
                "retention.job_runs_days",
                "expected a number of days of run history to keep, e.g. 90",
            ));
        }
        if !(1..=10_000_000).contains(&self.aggregate.batch_events) {
            return Err(ConfigError::invalid(
                "aggregate.batch_events",
                format!(
                    "got {}, expected 1 to 10000000 events per transaction",
                    self.aggregate.batch_events
                ),
            ));
        }
        if let Some(dir) = &self.embedded.pg_bin_dir
            && !dir.join("postgres").exists()
        {
            return Err(ConfigError::invalid(
                "embedded.pg_bin_dir",
                format!(
                    "{} holds no `postgres` binary; expected the directory of initdb/pg_ctl/postgres",
                    dir.display()
                ),
            ));
        }
        if let Some(listen) = self.metrics.listen.as_deref().map(str::trim)
            && !listen.is_empty()
            && listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(ConfigError::invalid(
                "metrics.listen",
                format!(
                    "`{listen}` is not a socket address; expected IP:PORT such as 127.0.0.1:9187 or [::1]:9187, or \"\" for off"
                ),
            ));
        }
        if let Some(file) = &self.database.password_file
            && !file.exists()
        {
            return Err(ConfigError::invalid(
                "database.password_file",
                format!("{} does not exist", file.display()),
            ));
        }
        self.validate_mail()?;
        self.validate_alerts()
    }

    fn validate_mail(&self) -> Result<(), ConfigError> {
        let mail = &self.mail;
        for (key, value) in [
            ("mail.from", Some(&mail.from)),
            ("mail.reply_to", mail.reply_to.as_ref()),
        ] {
            if let Some(value) = value
                && let Err(e) = value.parse::<lettre::message::Mailbox>()
            {
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "`{value}` is not a mailbox ({e}); expected e.g. `Example Usage <usage@example.com>`"
                    ),
                ));
            }
        }
        for (key, value) in [
            ("mail.upgrade_url", &mail.upgrade_url),
            ("mail.preferences_url", &mail.preferences_url),
        ] {
            if let Some(url) = value
                && !(url.starts_with("https://") || url.starts_with("http://"))
            {
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "`{url}` is not an http(s) URL; expected e.g. https://example.com/billing"
                    ),
                ));
            }
        }
        let smtp = &mail.smtp;
        if mail.transport_kind() == MailTransportKind::Smtp {
            if smtp.host.trim().is_empty() {
                return Err(ConfigError::invalid(
                    "mail.smtp.host",
                    "is empty; expected the SMTP relay's host name, e.g. smtp.example.com",
                ));
            }
            if smtp.tls == SmtpTls::None && !is_loopback_host(&smtp.host) {
                return Err(ConfigError::invalid(
                    "mail.smtp.tls",
                    format!(
                        "`none` sends mail and password in clear text and is only allowed for loopback hosts, not `{}`; expected starttls or tls",
                        smtp.host
                    ),
                ));
            }
        }
        if smtp.pool_size == 0 || smtp.pool_size > 64 {
            return Err(ConfigError::invalid(
                "mail.smtp.pool_size",
                format!("{} is out of range; expected 1 to 64", smtp.pool_size),
            ));
        }
        if smtp.timeout.0.is_zero() {
            return Err(ConfigError::invalid(
                "mail.smtp.timeout",
                "must be longer than 0s; expected e.g. 30s",
            ));
        }
        if let Some(file) = &smtp.password_file
            && !file.exists()
        {
            return Err(ConfigError::invalid(
                "mail.smtp.password_file",
                format!("{} does not exist", file.display()),
            ));
        }
        if smtp.username.is_none() && (smtp.password.is_some() || smtp.password_file.is_some()) {
            return Err(ConfigError::invalid(
                "mail.smtp.username",
                "is not set but a password is; set both, or neither for a relay without authentication",
            ));
        }
        if mail.transport_kind() == MailTransportKind::File && mail.file.dir.is_none() {
            return Err(ConfigError::invalid(
                "mail.file.dir",
                "is not set but mail.transport is `file`; expected a directory, e.g. /var/lib/usage-worker/mail",
            ));
        }
        crate::mail::templates::Templates::load(mail.templates_dir.as_deref())
            .and_then(|t| t.render_sample())
            .map_err(|e| ConfigError::invalid("mail.templates_dir", e.to_string()))?;
        Ok(())
    }

    fn validate_alerts(&self) -> Result<(), ConfigError> {
        let alerts = &self.alerts;
        if alerts.thresholds.is_empty() {
            return Err(ConfigError::invalid(
                "alerts.thresholds",
                "is empty; expected percentages such as [80, 95]",
            ));
        }
        if let Some(bad) = alerts.thresholds.iter().find(|t| **t == 0 || **t > 100) {
            return Err(ConfigError::invalid(
                "alerts.thresholds",
                format!("{bad} is out of range; expected percentages from 1 to 100"),
            ));
        }
        let mut sorted = alerts.thresholds.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != alerts.thresholds.len() {
            return Err(ConfigError::invalid(
                "alerts.thresholds",
                "lists a percentage twice; expected distinct percentages such as [80, 95]",
            ));
        }
        if alerts.max_attempts == 0 || alerts.max_attempts > 100 {
            return Err(ConfigError::invalid(
                "alerts.max_attempts",
                format!("{} is out of range; expected 1 to 100", alerts.max_attempts),
            ));
        }
        for (key, value) in [
            ("alerts.expire_after", alerts.expire_after),
            ("alerts.backoff_base", alerts.backoff_base),
            ("alerts.lease", alerts.lease),
        ] {
            if value.0.is_zero() {
                return Err(ConfigError::invalid(
                    key,
                    "must be longer than 0s; expected e.g. 10m",
                ));
            }
        }
        if alerts.backoff_max.0 < alerts.backoff_base.0 {
            return Err(ConfigError::invalid(
                "alerts.backoff_max",
                format!(
                    "{} is shorter than alerts.backoff_base ({}); expected at least that",
                    alerts.backoff_max, alerts.backoff_base
                ),
            ));
        }
        if alerts.batch_size == 0 || alerts.batch_size > 10_000 {
            return Err(ConfigError::invalid(
                "alerts.batch_size",
                format!("{} is out of range; expected 1 to 10000", alerts.batch_size),
            ));
        }
        Ok(())
    }

    /// Every job with its effective schedule and timeout, validated.
    pub fn job_plans(&self) -> Result<Vec<JobPlan>, ConfigError> {
        JobKind::ALL
            .iter()
            .map(|&kind| {
                let defaults = kind.defaults();
                let entry = self.jobs.get(kind.config_key());
                let text = entry
                    .and_then(|j| j.schedule.clone())
                    .unwrap_or_else(|| defaults.schedule.to_string());
                let key = format!("jobs.{}.schedule", kind.config_key());
                let schedule = if text.trim().is_empty() {
                    None
                } else {
                    Some(
                        Schedule::parse(&text)
                            .map_err(|message| ConfigError::invalid(key.clone(), message))?,
                    )
                };
                let timeout = entry
                    .and_then(|j| j.timeout)
                    .map_or(defaults.timeout, |d| d.0);
                if timeout.is_zero() {
                    return Err(ConfigError::invalid(
                        format!("jobs.{}.timeout", kind.config_key()),
                        "must be longer than 0s; expected e.g. 10m",
                    ));
                }
                Ok(JobPlan {
                    kind,
                    schedule,
                    timeout,
                })
            })
            .collect()
    }

    pub fn job_plan(&self, kind: JobKind) -> Result<JobPlan, ConfigError> {
        self.job_plans()?
            .into_iter()
            .find(|p| p.kind == kind)
            .ok_or_else(|| ConfigError::Other(format!("no plan for job {}", kind.name())))
    }

    /// The database password from `database.password`, `database.password_file`, or the
    /// systemd credential `database-password`.
    pub fn database_password(&self) -> Result<Option<SecretString>, ConfigError> {
        read_secret(
            "database.password",
            self.database.password.as_ref(),
            self.database.password_file.as_deref(),
            "database-password",
        )
    }

    /// The effective configuration as TOML, secrets redacted (`--check-config`).
    pub fn to_redacted_toml(&self) -> String {
        let mut copy = self.clone();
        for plan in self.job_plans().unwrap_or_default() {
            let entry = copy
                .jobs
                .entry(plan.kind.config_key().to_string())
                .or_default();
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

/// Reads a secret from its inline key, its `_file` key, or a systemd credential.
pub fn read_secret(
    key: &str,
    inline: Option<&SecretString>,
    file: Option<&Path>,
    credential: &str,
) -> Result<Option<SecretString>, ConfigError> {
    if let Some(secret) = inline {
        return Ok(Some(secret.clone()));
    }
    let path = match file {
        Some(p) => Some(p.to_path_buf()),
        None => std::env::var_os("CREDENTIALS_DIRECTORY")
            .map(|dir| PathBuf::from(dir).join(credential))
            .filter(|p| p.exists()),
    };
    let Some(path) = path else { return Ok(None) };
    warn_if_world_readable(key, &path);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        ConfigError::invalid(
            format!("{key}_file"),
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    Ok(Some(SecretString::from(
        text.trim_end_matches(['\r', '\n']).to_string(),
    )))
}

fn warn_if_world_readable(key: &str, path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o004 != 0
    {
        tracing::warn!(
            config.key = key,
            file = %path.display(),
            "password file is readable by every user; run chmod 600 on it"
        );
    }
}

/// Turns the `config` crate's errors into ones that name the key.
fn map_config_error(error: config::ConfigError, file: &Option<PathBuf>) -> ConfigError {
    match error {
        config::ConfigError::Type {
            key: Some(key),
            unexpected,
            expected,
            ..
        } => ConfigError::invalid(key, format!("got {unexpected}, expected {expected}")),
        config::ConfigError::At {
            error,
            key: Some(key),
            ..
        } => {
            let text = error.to_string();
            match unknown_field(&text) {
                Some(field) => ConfigError::invalid(
                    format!("{key}.{field}"),
                    format!(
                        "unknown key ({text}); check the spelling against deploy/config.example.toml"
                    ),
                ),
                None => ConfigError::invalid(key, text),
            }
        }
        config::ConfigError::FileParse { cause, .. } => ConfigError::File {
            path: file.clone().unwrap_or_default(),
            message: cause.to_string(),
        },
        other => {
            let text = other.to_string();
            // serde's unknown-field message names the field but not its section.
            if let Some(field) = unknown_field(&text) {
                return ConfigError::invalid(
                    field.to_string(),
                    format!(
                        "unknown key ({text}); check the spelling against deploy/config.example.toml"
                    ),
                );
            }
            ConfigError::Other(text)
        }
    }
}

/// The field named by serde's "unknown field `x`, expected …" message.
fn unknown_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
}
