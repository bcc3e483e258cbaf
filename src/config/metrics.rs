//! `[metrics]`: the address of `/healthz` and `/metrics`.

use serde::{Deserialize, Serialize};

use super::ConfigError;

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Address serving `/healthz` and `/metrics`, e.g. `127.0.0.1:9187`; unset or empty = off.
    pub listen: Option<String>,
}

impl MetricsSettings {
    /// The validated address, `None` when metrics are off.
    pub fn listen_address(&self) -> Option<std::net::SocketAddr> {
        self.listen_text().and_then(|l| l.parse().ok())
    }

    fn listen_text(&self) -> Option<&str> {
        self.listen
            .as_deref()
            .map(str::trim)
            .filter(|l| !l.is_empty())
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(listen) = self.listen_text()
            && listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(ConfigError::invalid(
                "metrics.listen",
                format!(
                    "`{listen}` is not a socket address; expected IP:PORT such as 127.0.0.1:9187 or [::1]:9187, or \"\" for off"
                ),
            ));
        }
        Ok(())
    }
}
