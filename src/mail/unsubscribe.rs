//! One-click unsubscribe (RFC 8058): every alert email carries
//! `List-Unsubscribe: <mail.unsubscribe_url?token=…>` and
//! `List-Unsubscribe-Post: List-Unsubscribe=One-Click`. The application's endpoint receives
//! the POST and passes the token to `usage.usage_unsubscribe(token)`, which verifies it in the
//! database and turns the user's alert emails off.
//!
//! A token is `u1.<user id>.<scope>.<expires>.<key id>.<mac>`: the scope is what it turns off
//! (`all` in the header), `expires` Unix seconds ([`TOKEN_VALIDITY_DAYS`] after the email), the
//! MAC HMAC-SHA256 in hex over everything before it. It is keyed by a signing key derived from
//! `mail.unsubscribe_secret` (so the secret itself never reaches the database), which each
//! run registers in `usage_unsubscribe_keys` under its key id (the first 16 hex digits of its
//! SHA-256) before any email carries it. A token of another installation names a key this
//! database does not have, or fails the MAC: refused either way.

use chrono::{DateTime, Duration, Utc};
use lettre::message::header::{Header, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};

use crate::config::{ConfigError, MailSettings};

/// How long a token works: RFC 8058 asks for links that keep working for a while after the
/// email; mail providers expect at least 60 days.
pub const TOKEN_VALIDITY_DAYS: i64 = 90;
const _: () = assert!(
    TOKEN_VALIDITY_DAYS >= 60,
    "links must keep working for 60 days"
);

/// What a token turns off: every alert email (the header's), or one kind of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    All,
    Quota,
    Credit,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::All => "all",
            Scope::Quota => "quota",
            Scope::Credit => "credit",
        }
    }
}

/// Signs unsubscribe tokens and builds the links of the header.
pub struct Unsubscribe {
    url: url::Url,
    signing_key: [u8; 32],
    key_id: String,
}

impl Unsubscribe {
    /// The signer `mail.unsubscribe_url` and its secret call for; `None` without the URL.
    pub fn from_settings(settings: &MailSettings) -> Result<Option<Unsubscribe>, ConfigError> {
        Ok(settings
            .unsubscribe()?
            .map(|(url, secret)| Unsubscribe::new(url, &secret)))
    }

    /// `url`: `mail.unsubscribe_url` (validated: https with a host); `secret`: the installation's
    /// `mail.unsubscribe_secret`.
    pub fn new(url: url::Url, secret: &SecretString) -> Unsubscribe {
        let derive =
            ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.expose_secret().as_bytes());
        let tag = ring::hmac::sign(&derive, b"usage-worker unsubscribe v1");
        let mut signing_key = [0u8; 32];
        signing_key.copy_from_slice(tag.as_ref());
        let digest = ring::digest::digest(&ring::digest::SHA256, &signing_key);
        let key_id = hex(&digest.as_ref()[..8]);
        Unsubscribe {
            url,
            signing_key,
            key_id,
        }
    }

    /// The key id tokens name, and the key the database verifies them with.
    pub fn key(&self) -> (&str, &[u8]) {
        (&self.key_id, &self.signing_key)
    }

    /// The token that turns `scope` off for `user_id`, valid until `expires`.
    pub fn token(&self, user_id: i64, scope: Scope, expires: DateTime<Utc>) -> String {
        let signed = format!(
            "u1.{user_id}.{}.{}.{}",
            scope.as_str(),
            expires.timestamp().max(0),
            self.key_id
        );
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.signing_key);
        let mac = ring::hmac::sign(&key, signed.as_bytes());
        format!("{signed}.{}", hex(mac.as_ref()))
    }

    /// `mail.unsubscribe_url` with `token=` (every alert email off) added to its query, for an
    /// email sent at `now`.
    pub fn link(&self, user_id: i64, now: DateTime<Utc>) -> String {
        let expires = now + Duration::days(TOKEN_VALIDITY_DAYS);
        let mut url = self.url.clone();
        url.query_pairs_mut()
            .append_pair("token", &self.token(user_id, Scope::All, expires));
        url.into()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `List-Unsubscribe: <https://…?token=…>`.
#[derive(Debug, Clone)]
pub struct ListUnsubscribe(pub String);

impl Header for ListUnsubscribe {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ListUnsubscribe(
            s.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string(),
        ))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), format!("<{}>", self.0))
    }
}

/// `List-Unsubscribe-Post: List-Unsubscribe=One-Click`: the link is a one-click POST.
#[derive(Debug, Clone)]
pub struct ListUnsubscribePost;

impl Header for ListUnsubscribePost {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe-Post")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ListUnsubscribePost)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "List-Unsubscribe=One-Click".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(secret: &str) -> Unsubscribe {
        Unsubscribe::new(
            url::Url::parse("https://example.com/unsubscribe?list=usage").unwrap(),
            &SecretString::from(secret.to_string()),
        )
    }

    #[test]
    fn a_link_keeps_the_urls_query_and_names_the_user_the_scope_and_the_key() {
        let s = signer("0123456789abcdef0123456789abcdef");
        let now: DateTime<Utc> = "2026-12-07T12:00:00Z".parse().unwrap();
        let link = s.link(42, now);
        let url = url::Url::parse(&link).unwrap();
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(pairs[0], ("list".into(), "usage".into()));
        let token = &pairs[1].1;
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts[..3], ["u1", "42", "all"]);
        let expires: i64 = parts[3].parse().unwrap();
        assert_eq!(expires - now.timestamp(), TOKEN_VALIDITY_DAYS * 86_400);
        assert_eq!(parts[4], s.key().0);
        assert_eq!(parts[5].len(), 64);
    }

    #[test]
    fn another_secret_gives_another_key_and_another_mac() {
        let a = signer("0123456789abcdef0123456789abcdef");
        let b = signer("fedcba9876543210fedcba9876543210");
        let at = "2027-03-01T00:00:00Z".parse().unwrap();
        assert_ne!(a.key().0, b.key().0);
        assert_ne!(a.key().1, b.key().1);
        let (ta, tb) = (a.token(1, Scope::All, at), b.token(1, Scope::All, at));
        assert_ne!(ta.rsplit('.').next(), tb.rsplit('.').next());
        // The same secret always signs alike: tokens survive a restart.
        assert_eq!(
            ta,
            signer("0123456789abcdef0123456789abcdef").token(1, Scope::All, at)
        );
    }
}
