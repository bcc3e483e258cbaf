//! `[[alerts.webhooks]]`: endpoints that receive the quota alerts as signed HTTP requests
//! (Standard Webhooks), and `alerts.channels`, which says where alerts go.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

use super::secrets::{serialize_secret, validate_secret_file};
use super::{ConfigError, HumanDuration};

/// Prefix of a Standard Webhooks secret: `whsec_` then the key in base64.
pub const SECRET_PREFIX: &str = "whsec_";
/// The event types an endpoint may subscribe to.
pub const WEBHOOK_EVENTS: [&str; 6] = [
    "quota.threshold",
    "quota.exhausted",
    "quota.forecast",
    "credit.low",
    "credit.depleted",
    "credit.recovered",
];
/// More endpoints than this would need more delivery threads than a run should start.
const MAX_ENDPOINTS: usize = 32;

/// Where alerts are delivered (`alerts.channels`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertChannel {
    Email,
    Webhook,
}

/// One endpoint. Secrets come from `secret`, `secret_file`, `secrets` or `secret_files`;
/// every secret given signs each request, so a receiver knowing any one of them verifies it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpoint {
    /// Shown with any password and query values masked: receivers often put a token there.
    #[serde(serialize_with = "serialize_url")]
    pub url: String,
    #[serde(default, serialize_with = "serialize_secret")]
    pub secret: Option<SecretString>,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    #[serde(default, serialize_with = "serialize_secrets")]
    pub secrets: Vec<SecretString>,
    #[serde(default)]
    pub secret_files: Vec<PathBuf>,
    /// Event types sent to this endpoint; unset: all of them.
    #[serde(default)]
    pub events: Option<Vec<String>>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// Limit for the whole request, response included.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

fn default_connect_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

fn serialize_url<S: Serializer>(url: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&redact_webhook_url(url))
}

/// The URL with the password of its user info and every query value masked.
pub fn redact_webhook_url(text: &str) -> String {
    let Ok(mut url) = url::Url::parse(text) else {
        return "[unparsable URL]".into();
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    if url.query().is_some() {
        let masked: Vec<String> = url
            .query_pairs()
            .map(|(key, _)| format!("{key}=***"))
            .collect();
        url.set_query(Some(&masked.join("&")));
    }
    url.to_string()
}

fn serialize_secrets<S: Serializer>(
    secrets: &[SecretString],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(secrets.iter().map(|_| "[redacted]"))
}

impl WebhookEndpoint {
    /// Whether this endpoint receives events of `event_type`.
    pub fn wants(&self, event_type: &str) -> bool {
        self.events
            .as_ref()
            .is_none_or(|events| events.iter().any(|e| e == event_type))
    }

    /// The host the URL names, for logs and metrics (never the path or query, which may
    /// carry a token).
    pub fn host(&self) -> String {
        url::Url::parse(&self.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// Every signing key of the endpoint, decoded, in the order configured. `index` names the
    /// endpoint in errors (`alerts.webhooks[0].secret`).
    pub fn signing_keys(&self, index: usize) -> Result<Vec<SecretBytes>, ConfigError> {
        let key = |name: &str| format!("alerts.webhooks[{index}].{name}");
        let mut texts: Vec<(String, SecretString)> = Vec::new();
        if let Some(secret) = &self.secret {
            texts.push((key("secret"), secret.clone()));
        }
        if let Some(path) = &self.secret_file {
            texts.push((
                key("secret_file"),
                read_secret_file(&key("secret_file"), path)?,
            ));
        }
        for (i, secret) in self.secrets.iter().enumerate() {
            texts.push((key(&format!("secrets[{i}]")), secret.clone()));
        }
        for (i, path) in self.secret_files.iter().enumerate() {
            let name = key(&format!("secret_files[{i}]"));
            texts.push((name.clone(), read_secret_file(&name, path)?));
        }
        texts
            .into_iter()
            .map(|(name, text)| {
                decode_secret(text.expose_secret()).map_err(|m| ConfigError::invalid(name, m))
            })
            .collect()
    }

    fn validate(&self, index: usize) -> Result<(), ConfigError> {
        let key = |name: &str| format!("alerts.webhooks[{index}].{name}");
        let parsed = url::Url::parse(&self.url).ok().filter(|u| {
            matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
        });
        if parsed.is_none() {
            return Err(ConfigError::invalid(
                key("url"),
                format!(
                    "`{}` is not an http(s) URL with a host; expected e.g. https://example.com/hooks/usage",
                    redact_webhook_url(&self.url)
                ),
            ));
        }
        if self.secret.is_some() && self.secret_file.is_some() {
            return Err(ConfigError::invalid(
                key("secret_file"),
                "is set together with `secret`; keep one of them (or list several in `secrets`/`secret_files` to rotate)",
            ));
        }
        validate_secret_file(&key("secret_file"), self.secret_file.as_deref())?;
        for (i, path) in self.secret_files.iter().enumerate() {
            validate_secret_file(&key(&format!("secret_files[{i}]")), Some(path))?;
        }
        if self.signing_keys(index)?.is_empty() {
            return Err(ConfigError::invalid(
                key("secret"),
                "is not set; set `secret_file` (or `secret`) to the endpoint's whsec_… signing secret",
            ));
        }
        for event in self.events.iter().flatten() {
            if !WEBHOOK_EVENTS.contains(&event.as_str()) {
                return Err(ConfigError::invalid(
                    key("events"),
                    format!(
                        "`{event}` is not an event type; expected some of {}",
                        WEBHOOK_EVENTS.join(", ")
                    ),
                ));
            }
        }
        for (name, value) in [
            ("connect_timeout", self.connect_timeout),
            ("timeout", self.timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::invalid(
                    key(name),
                    "must be longer than 0s; expected e.g. 10s",
                ));
            }
        }
        Ok(())
    }
}

/// The secret in `path`, without its trailing newline.
fn read_secret_file(key: &str, path: &Path) -> Result<SecretString, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::invalid(key, format!("cannot read {}: {e}", path.display())))?;
    Ok(SecretString::from(
        text.trim_end_matches(['\r', '\n']).to_string(),
    ))
}

/// Key bytes that are wiped from memory when dropped and never printed.
pub type SecretBytes = secrecy::SecretBox<[u8]>;

/// A Standard Webhooks secret, `whsec_` + base64 of 24 to 64 random bytes, decoded.
pub fn decode_secret(text: &str) -> Result<SecretBytes, String> {
    let Some(encoded) = text.trim().strip_prefix(SECRET_PREFIX) else {
        return Err("does not start with `whsec_`; expected whsec_ followed by base64, e.g. from `echo whsec_$(head -c 32 /dev/urandom | base64)`".into());
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| {
            "is not whsec_ followed by base64 (standard alphabet, with padding)".to_string()
        })?;
    if !(24..=64).contains(&bytes.len()) {
        return Err(format!(
            "decodes to {} bytes; expected 24 to 64 random bytes (32 is usual)",
            bytes.len()
        ));
    }
    Ok(SecretBytes::from(bytes.into_boxed_slice()))
}

/// Checks `alerts.webhooks` and `alerts.channels` together.
pub(super) fn validate(
    endpoints: &[WebhookEndpoint],
    channels: Option<&[AlertChannel]>,
) -> Result<(), ConfigError> {
    if endpoints.len() > MAX_ENDPOINTS {
        return Err(ConfigError::invalid(
            "alerts.webhooks",
            format!(
                "lists {} endpoints; expected at most {MAX_ENDPOINTS} (fan out behind one endpoint instead)",
                endpoints.len()
            ),
        ));
    }
    for (index, endpoint) in endpoints.iter().enumerate() {
        endpoint.validate(index)?;
    }
    if let Some(channels) = channels {
        if channels.is_empty() {
            return Err(ConfigError::invalid(
                "alerts.channels",
                "is empty; expected [\"email\"], [\"webhook\"] or both",
            ));
        }
        if channels.contains(&AlertChannel::Webhook) && endpoints.is_empty() {
            return Err(ConfigError::invalid(
                "alerts.channels",
                "names `webhook` but no [[alerts.webhooks]] endpoint is configured; add one or drop `webhook`",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

    fn endpoint(url: &str) -> WebhookEndpoint {
        WebhookEndpoint {
            url: url.into(),
            secret: Some(SecretString::from(SECRET)),
            secret_file: None,
            secrets: Vec::new(),
            secret_files: Vec::new(),
            events: None,
            connect_timeout: default_connect_timeout(),
            timeout: default_timeout(),
        }
    }

    fn refused_key(endpoints: &[WebhookEndpoint]) -> String {
        match validate(endpoints, None) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected a refused key, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_endpoint_passes_and_names_its_host() {
        let e = endpoint("https://hooks.example.com/usage?token=x");
        assert!(validate(std::slice::from_ref(&e), None).is_ok());
        assert_eq!(e.host(), "hooks.example.com");
        assert_eq!(e.signing_keys(0).unwrap().len(), 1);
    }

    #[test]
    fn a_bad_url_is_refused_naming_the_endpoint() {
        for url in ["ftp://example.com/x", "not a url", "https://", "/hooks"] {
            let ok = endpoint("https://example.com/");
            assert_eq!(
                refused_key(&[ok, endpoint(url)]),
                "alerts.webhooks[1].url",
                "{url}"
            );
        }
    }

    #[test]
    fn a_secret_that_is_not_whsec_base64_of_24_to_64_bytes_is_refused() {
        for bad in [
            "C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "whsec_not*base64",
            "whsec_c2hvcnQ=",
        ] {
            let mut e = endpoint("https://example.com/");
            e.secret = Some(SecretString::from(bad));
            assert_eq!(refused_key(&[e]), "alerts.webhooks[0].secret", "{bad}");
        }
        let mut rotated = endpoint("https://example.com/");
        rotated.secrets = vec![SecretString::from(SECRET), SecretString::from("whsec_")];
        assert_eq!(refused_key(&[rotated]), "alerts.webhooks[0].secrets[1]");
    }

    #[test]
    fn an_endpoint_without_a_secret_or_with_an_unknown_event_is_refused() {
        let mut e = endpoint("https://example.com/");
        e.secret = None;
        assert_eq!(refused_key(&[e]), "alerts.webhooks[0].secret");
        let mut e = endpoint("https://example.com/");
        e.events = Some(vec!["quota.threshold".into(), "quota.exceeded".into()]);
        assert_eq!(refused_key(&[e]), "alerts.webhooks[0].events");
    }

    #[test]
    fn secrets_are_read_from_files_and_every_one_signs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, format!("{SECRET}\n")).unwrap();
        let mut e = endpoint("https://example.com/");
        e.secret = None;
        e.secret_file = Some(path.clone());
        e.secret_files = vec![path];
        e.secrets = vec![SecretString::from(SECRET)];
        let keys = e.signing_keys(0).unwrap();
        assert_eq!(keys.len(), 3);
        assert_eq!(keys[0].expose_secret(), keys[2].expose_secret());
    }

    #[test]
    fn the_webhook_channel_needs_an_endpoint() {
        let key = match validate(&[], Some(&[AlertChannel::Email, AlertChannel::Webhook])) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("{other:?}"),
        };
        assert_eq!(key, "alerts.channels");
        assert!(validate(&[], Some(&[AlertChannel::Email])).is_ok());
    }

    #[test]
    fn a_webhook_url_is_shown_without_its_password_or_query_values() {
        assert_eq!(
            redact_webhook_url("https://u:pw@example.com/h?token=abc&x=1"),
            "https://u:***@example.com/h?token=***&x=***"
        );
    }

    #[test]
    fn secrets_never_appear_in_debug_or_serialized_output() {
        let mut e = endpoint("https://example.com/");
        e.secrets = vec![SecretString::from(SECRET)];
        let text = format!("{e:?} {}", toml::to_string(&e).unwrap());
        assert!(!text.contains("C2FVsBQ"), "{text}");
        assert!(text.contains("[redacted]"), "{text}");
    }
}
