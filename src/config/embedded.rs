//! `[embedded]`: the private PostgreSQL cluster of `--demo`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedSettings {
    /// Where `--demo` keeps its private cluster; default: `$TMPDIR/usage-worker-demo`.
    pub data_dir: Option<PathBuf>,
    /// Directory holding `initdb`, `pg_ctl` and `postgres`; default: found automatically.
    pub pg_bin_dir: Option<PathBuf>,
}

/// Where the demo keeps its state (cluster, mail) when `embedded.data_dir` is not set.
pub fn default_demo_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    std::env::temp_dir().join(format!("usage-worker-demo-{uid}"))
}

impl EmbeddedSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(dir) = &self.pg_bin_dir
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
        Ok(())
    }
}
