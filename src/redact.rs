//! Hiding secrets and personal data before anything is shown or logged: passwords in
//! connection URLs and `key=value` connection strings, and email addresses.

use url::Url;

/// What a hidden value is replaced with.
const MASK: &str = "***";

/// Hides the password of a `postgres://user:password@host/db` URL and of any `password`
/// parameter, so a connection string can be logged and printed.
pub fn redact_url(text: &str) -> String {
    if text.contains("://") {
        redact_uri(text)
    } else {
        redact_key_values(text)
    }
}

/// A connection URI: the password in its user info and in its query are masked.
fn redact_uri(text: &str) -> String {
    let Ok(mut url) = Url::parse(text) else {
        return redact_unparsed_userinfo(text);
    };
    // Untouched text is returned as given, without the parser's normalisation.
    let mut changed = false;
    if url.password().is_some() {
        if url.set_password(Some(MASK)).is_err() {
            return redact_unparsed_userinfo(text);
        }
        changed = true;
    }
    if let Some(query) = url.query() {
        let masked = redact_query(query);
        if masked != query {
            url.set_query(Some(&masked));
            changed = true;
        }
    }
    if changed {
        url.to_string()
    } else {
        text.to_string()
    }
}

/// `a=1&password=x` → `a=1&password=***`.
fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key == "password" => format!("{key}={MASK}"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A URI the parser refuses (e.g. several hosts): the whole user info is masked, since where
/// the password ends cannot be trusted, and `password=` parameters as in key=value strings.
fn redact_unparsed_userinfo(text: &str) -> String {
    let mut out = text.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..]
            .find(['/', '?'])
            .map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            out.replace_range(rest_start..rest_start + at, MASK);
        }
    }
    redact_key_values(&out)
}

/// A libpq `key=value` connection string (`host=/run/postgresql password=x`): the value of
/// every `password=` is masked.
fn redact_key_values(text: &str) -> String {
    let key = "password=";
    let mut out = text.to_string();
    let mut search_from = 0;
    while let Some(pos) = out[search_from..].find(key) {
        let start = search_from + pos + key.len();
        let end = out[start..]
            .find(['&', ' '])
            .map_or(out.len(), |i| start + i);
        out.replace_range(start..end, MASK);
        search_from = start + MASK.len();
    }
    out
}

/// Masks an email address for logs: `alice@example.com` → `a***@example.com`.
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}{MASK}@{domain}")
        }
        None => MASK.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_of_a_url_is_masked_and_the_rest_kept() {
        assert_eq!(
            redact_url("postgres://worker:s3cr3t@db.internal:5432/usage"),
            "postgres://worker:***@db.internal:5432/usage"
        );
        assert_eq!(
            redact_url("postgresql://worker:p%40ss@db/usage?sslmode=require"),
            "postgresql://worker:***@db/usage?sslmode=require"
        );
    }

    #[test]
    fn a_url_without_a_password_is_returned_unchanged() {
        for url in [
            "postgres://worker@DB.internal/usage",
            "postgresql:///usage?host=/run/postgresql",
            "",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn a_password_parameter_is_masked_in_urls_and_key_value_strings() {
        assert_eq!(
            redact_url("postgres://worker@db/usage?sslmode=require&password=s3cr3t"),
            "postgres://worker@db/usage?sslmode=require&password=***"
        );
        assert_eq!(
            redact_url("host=/run/postgresql password=s3cr3t dbname=usage"),
            "host=/run/postgresql password=*** dbname=usage"
        );
    }

    #[test]
    fn a_url_the_parser_refuses_loses_its_whole_user_info() {
        let redacted = redact_url("postgres://worker:s3cr3t@h1:5432,h2:5433/usage");
        assert!(!redacted.contains("s3cr3t"), "{redacted}");
        assert_eq!(redacted, "postgres://***@h1:5432,h2:5433/usage");
    }

    #[test]
    fn masked_email_keeps_only_the_first_letter_and_the_domain() {
        assert_eq!(mask_email("alice@example.com"), "a***@example.com");
        assert_eq!(mask_email("not-an-address"), "***");
    }
}
