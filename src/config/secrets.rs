//! Secrets: read from an inline key, a `*_file` key or a systemd credential, and never
//! serialized in clear.

use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::Serializer;

use super::ConfigError;

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

/// A `*_file` key must name an existing file.
pub(super) fn validate_secret_file(key: &str, file: Option<&Path>) -> Result<(), ConfigError> {
    match file {
        Some(file) if !file.exists() => Err(ConfigError::invalid(
            key,
            format!("{} does not exist", file.display()),
        )),
        _ => Ok(()),
    }
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

pub(super) fn serialize_secret<S: Serializer>(
    secret: &Option<SecretString>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match secret {
        Some(_) => serializer.serialize_str("[redacted]"),
        None => serializer.serialize_none(),
    }
}
