//! The URI form: `postgres://user:password@host:port/dbname?key=value&…`, read with the `url`
//! crate where it accepts the URI and as text where it does not (libpq's lists of hosts).

use url::Url;

use super::{MASK, is_secret};

/// Percent-encodes everything but RFC 3986's unreserved characters: libpq decodes `%XX` in
/// URIs and nothing else (a `+` stays a `+`), so form encoding would be wrong.
pub fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Decodes `%XX` sequences as libpq does (invalid ones are kept as written).
pub(super) fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query of a URI split at its first `?` (none: empty), without any `#fragment`.
fn split_query(text: &str) -> (&str, &str) {
    let without_fragment = text.split('#').next().unwrap_or(text);
    without_fragment
        .split_once('?')
        .unwrap_or((without_fragment, ""))
}

/// The decoded query parameters of a URI.
pub(super) fn uri_params(text: &str) -> Vec<(String, String)> {
    let (_, query) = split_query(text);
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(pair), String::new()),
        })
        .collect()
}

/// `text` with the query parameter `key` set to `value`. Through the `url` crate when it
/// accepts the URI; as text when it does not (libpq's several hosts, `user@` with no host).
pub(super) fn uri_with(text: &str, key: &str, value: &str) -> String {
    let (base, query) = split_query(text);
    let mut params: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty() && decode(p.split('=').next().unwrap_or(p)) != key)
        .map(str::to_string)
        .collect();
    params.push(format!("{}={}", percent_encode(key), percent_encode(value)));
    let query = params.join("&");
    match Url::parse(text) {
        Ok(mut url) => {
            url.set_query(Some(&query));
            url.to_string()
        }
        Err(_) => format!("{base}?{query}"),
    }
}

/// The URI with the password of its user info and every secret parameter masked.
pub(super) fn redact_uri(text: &str) -> String {
    let (base, query) = split_query(text);
    let masked_query: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if is_secret(&decode(k)) => format!("{k}={MASK}"),
            _ => pair.to_string(),
        })
        .collect();
    let masked_base = redact_user_info(base);
    let changed = masked_base != base || masked_query.join("&") != query;
    if !changed {
        return text.to_string();
    }
    if masked_query.is_empty() {
        masked_base
    } else {
        format!("{masked_base}?{}", masked_query.join("&"))
    }
}

/// `postgres://user:pw@host/db` → `postgres://user:***@host/db`. When the `url` crate refuses
/// the URI (several hosts), the whole user info goes, since where the password ends is unsure.
fn redact_user_info(base: &str) -> String {
    if let Ok(mut url) = Url::parse(base) {
        if url.password().is_none() {
            return base.to_string();
        }
        if url.set_password(Some(MASK)).is_ok() {
            return url.to_string();
        }
    }
    let Some(scheme_end) = base.find("://") else {
        return base.to_string();
    };
    let rest = scheme_end + 3;
    let authority_end = base[rest..].find('/').map_or(base.len(), |i| rest + i);
    match base[rest..authority_end].rfind('@') {
        Some(at) if base[rest..rest + at].contains(':') => {
            format!("{}{MASK}{}", &base[..rest], &base[rest + at..])
        }
        _ => base.to_string(),
    }
}

/// The decoded password of a URI's user info, also where the `url` crate refuses the URI
/// (libpq's several hosts): what follows the first `:` before the authority's last `@`.
pub(super) fn uri_password(text: &str) -> Option<String> {
    if let Ok(url) = Url::parse(text) {
        return url.password().map(decode);
    }
    let (base, _) = split_query(text);
    let after_scheme = base.split_once("://")?.1;
    let authority = after_scheme.split('/').next().unwrap_or("");
    let (user_info, _) = authority.rsplit_once('@')?;
    user_info
        .split_once(':')
        .map(|(_, password)| decode(password))
}

/// The host and port of a URI: a `host`/`port` parameter wins over the authority, as in libpq.
pub(super) fn uri_host_port(text: &str) -> (Option<String>, Option<String>) {
    let params = uri_params(text);
    let param = |key: &str| {
        params
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let (base, _) = split_query(text);
    let after_scheme = base.split_once("://").map_or("", |(_, rest)| rest);
    let authority = after_scheme.split('/').next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    // `[::1]:5432`, `db:5432`, `h1:5432,h2:5433`: each host's port is what follows its last
    // `:` outside brackets; the lists come back as libpq's `host=h1,h2 port=5432,5433`.
    let (hosts, ports): (Vec<String>, Vec<String>) = host_port
        .split(',')
        .map(|one| match one.rsplit_once(':') {
            Some((h, p)) if !p.contains(']') && !p.is_empty() => (decode(h), p.to_string()),
            _ => (decode(one), String::new()),
        })
        .unzip();
    let host = (!host_port.is_empty()).then(|| hosts.join(","));
    let port = ports.iter().any(|p| !p.is_empty()).then(|| ports.join(","));
    (param("host").or(host), param("port").or(port))
}
