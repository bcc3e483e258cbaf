//! libpq connection strings in both forms libpq takes: a URI
//! (`postgres://user:pw@host:5432/db?sslmode=require`) and `key=value` pairs
//! (`host=/run/postgresql dbname=usage password='a b'`). They are parsed as libpq parses them,
//! never searched for substrings, so a password is found however it is written, and one is
//! added so that libpq reads it back exactly.

mod uri;

pub use uri::percent_encode;
use uri::{redact_uri, uri_host_port, uri_params, uri_password, uri_with};

/// Keywords whose values are secrets (libpq shows them as password fields, or they hold keys).
const SECRET_KEYWORDS: &[&str] = &[
    "password",
    "sslpassword",
    "scram_client_key",
    "scram_server_key",
];

/// What replaces a secret in anything shown.
pub const MASK: &str = "***";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnInfoError {
    /// The word is not named: it may be part of a password written with a space in it.
    #[error(
        "a word {0} has no \"=\"; write key=value pairs separated by spaces and quote values \
         that hold spaces: password='…'"
    )]
    MissingEquals(String),
    #[error(
        "the quoted value of `{0}` has no closing '; write \\' for a quote inside it and \\\\ \
         for a backslash"
    )]
    UnterminatedQuote(String),
    #[error("\"=\" without a keyword before it; write key=value pairs such as host=localhost")]
    EmptyKeyword,
}

/// A parsed connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnInfo {
    /// `postgres://…` or `postgresql://…`, kept as written.
    Uri(String),
    /// `key=value` pairs in order, values unquoted and unescaped.
    KeyValues(Vec<(String, String)>),
}

impl ConnInfo {
    /// Parses either form; the URI form is recognised by its scheme, as libpq does.
    pub fn parse(text: &str) -> Result<ConnInfo, ConnInfoError> {
        if is_uri(text) {
            Ok(ConnInfo::Uri(text.to_string()))
        } else {
            parse_key_values(text).map(ConnInfo::KeyValues)
        }
    }

    /// The connection string with `key` set to `value`, overriding any earlier setting (libpq
    /// lets a later setting win, also a query parameter over the URI's user info).
    pub fn with(&self, key: &str, value: &str) -> String {
        match self {
            ConnInfo::Uri(text) => uri_with(text, key, value),
            ConnInfo::KeyValues(pairs) => {
                let mut pairs: Vec<(String, String)> =
                    pairs.iter().filter(|(k, _)| k != key).cloned().collect();
                pairs.push((key.to_string(), value.to_string()));
                render_pairs(&pairs)
            }
        }
    }

    /// Whether `key` is set (in a URI: as a query parameter).
    pub fn has(&self, key: &str) -> bool {
        match self {
            ConnInfo::Uri(text) => uri_params(text).iter().any(|(k, _)| k == key),
            ConnInfo::KeyValues(pairs) => pairs.iter().any(|(k, _)| k == key),
        }
    }

    /// The connection string with every secret replaced by [`MASK`]; unchanged when it holds
    /// none.
    pub fn redacted(&self) -> String {
        match self {
            ConnInfo::Uri(text) => redact_uri(text),
            ConnInfo::KeyValues(pairs) => {
                let masked: Vec<(String, String)> = pairs
                    .iter()
                    .map(|(k, v)| match is_secret(k) {
                        true => (k.clone(), MASK.to_string()),
                        false => (k.clone(), v.clone()),
                    })
                    .collect();
                render_pairs(&masked)
            }
        }
    }

    /// The secret values as libpq reads them (decoded), for scrubbing them from messages.
    pub fn secrets(&self) -> Vec<String> {
        let mut found: Vec<String> = match self {
            ConnInfo::Uri(text) => uri_params(text),
            ConnInfo::KeyValues(pairs) => pairs.clone(),
        }
        .into_iter()
        .filter(|(k, _)| is_secret(k))
        .map(|(_, v)| v)
        .collect();
        if let ConnInfo::Uri(text) = self
            && let Some(password) = uri_password(text)
        {
            found.push(password);
        }
        found
    }

    /// Where the connection goes, for messages: `host db.internal port 5432`, or
    /// `socket /run/postgresql/.s.PGSQL.5432`; empty when libpq's defaults decide.
    pub fn target(&self) -> String {
        let (host, port) = match self {
            ConnInfo::Uri(text) => uri_host_port(text),
            ConnInfo::KeyValues(pairs) => {
                let get = |key: &str| {
                    pairs
                        .iter()
                        .rev()
                        .find(|(k, _)| k == key)
                        .map(|(_, v)| v.clone())
                };
                (get("host").or_else(|| get("hostaddr")), get("port"))
            }
        };
        let Some(host) = host else {
            return port.map_or(String::new(), |port| format!("port {port}"));
        };
        // libpq's lists: `host=a,b port=5432,5433`, or one port for every host.
        let hosts: Vec<&str> = host.split(',').collect();
        let ports: Vec<&str> = port
            .as_deref()
            .map_or(Vec::new(), |p| p.split(',').collect());
        let port_of = |i: usize| match ports.len() {
            0 => None,
            1 => Some(ports[0]),
            _ => ports.get(i).copied(),
        };
        if hosts.len() == 1 {
            return describe_host(&host, port_of(0), false);
        }
        let each: Vec<String> = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| describe_host(h, port_of(i), true))
            .collect();
        format!("hosts {}", each.join(", "))
    }
}

/// `host db port 5432` or, in a list, `db:5432`; a directory is a unix socket.
fn describe_host(host: &str, port: Option<&str>, in_list: bool) -> String {
    if host.starts_with('/') {
        return format!("socket {host}/.s.PGSQL.{}", port.unwrap_or("5432"));
    }
    match (port, in_list) {
        (Some(port), true) => format!("{host}:{port}"),
        (Some(port), false) => format!("host {host} port {port}"),
        (None, true) => host.to_string(),
        (None, false) => format!("host {host}"),
    }
}

/// libpq takes a string for a URI exactly when it starts with one of these.
fn is_uri(text: &str) -> bool {
    text.starts_with("postgresql://") || text.starts_with("postgres://")
}

fn is_secret(key: &str) -> bool {
    SECRET_KEYWORDS.contains(&key)
}

/// Parses `key=value` pairs as libpq's `conninfo_parse` does: spaces around `=` are allowed,
/// a value is a word or a single-quoted string, and `\` escapes the next character in both.
pub fn parse_key_values(text: &str) -> Result<Vec<(String, String)>, ConnInfoError> {
    let mut chars = text.chars().peekable();
    let mut pairs: Vec<(String, String)> = Vec::new();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next_if_eq(&'=').is_none() {
            let place = match pairs.last() {
                Some((previous, _)) => format!("after the value of `{previous}`"),
                None => "at the start".to_string(),
            };
            return Err(ConnInfoError::MissingEquals(place));
        }
        if key.is_empty() {
            return Err(ConnInfoError::EmptyKeyword);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(ConnInfoError::UnterminatedQuote(key)),
                    Some('\'') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => return Err(ConnInfoError::UnterminatedQuote(key)),
                    },
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                match c {
                    '\\' => value.extend(chars.next()),
                    c => value.push(c),
                }
            }
        }
        pairs.push((key, value));
    }
}

/// A value as libpq reads it back: bare when it is a plain word, else single-quoted with `\`
/// and `'` escaped.
pub fn quote_value(value: &str) -> String {
    let plain = !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '\\');
    if plain {
        return value.to_string();
    }
    let escaped = value.replace('\\', "\\\\").replace('\'', "\\'");
    format!("'{escaped}'")
}

fn render_pairs(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", quote_value(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests;
