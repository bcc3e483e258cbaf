//! `[database]`: where the books are, and how many connections to keep.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize, Serializer};

use super::secrets::{read_secret, serialize_secret, validate_secret_file};
use super::{ConfigError, HumanDuration, SchemaName, Settings};
use crate::conninfo::ConnInfo;
use crate::redact::redact_url;

#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// libpq connection string, a URI or `key=value` pairs. A password in it is redacted
    /// wherever it is shown.
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
    /// The schema every object of the worker lives in; its sessions use it as `search_path`.
    pub schema: SchemaName,
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
            .field("schema", &self.schema)
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
            schema: SchemaName::default(),
        }
    }
}

impl DatabaseSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.pool_size == 0 || self.pool_size > 200 {
            return Err(ConfigError::invalid(
                "database.pool_size",
                format!("{} is out of range; expected 1 to 200", self.pool_size),
            ));
        }
        let url = &self.url;
        let looks_like_postgres = url.is_empty()
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://")
            || url.contains('=');
        if !looks_like_postgres {
            return Err(ConfigError::invalid(
                "database.url",
                format!(
                    "`{}` is not a PostgreSQL URL; expected postgres://user@host:5432/dbname",
                    redact_url(url)
                ),
            ));
        }
        // The error names no value: the part that does not parse may be a password.
        ConnInfo::parse(url).map_err(|e| {
            ConfigError::invalid(
                "database.url",
                format!("is not a valid key=value connection string: {e}"),
            )
        })?;
        validate_secret_file("database.password_file", self.password_file.as_deref())
    }
}

impl Settings {
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
}

fn serialize_redacted_url<S: Serializer>(url: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&redact_url(url))
}
