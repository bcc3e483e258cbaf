//! Hiding secrets and personal data before anything is shown or logged: passwords in
//! connection strings (both libpq forms, parsed by [`crate::conninfo`]) and email addresses.

use crate::conninfo::{ConnInfo, MASK, percent_encode, quote_value};

/// Secrets shorter than this are not searched for in free text: masking every `1` of a
/// message for a one-character password would hide the message, not the password.
const SHORTEST_SCRUBBED_SECRET: usize = 4;

/// A connection string (URI or `key=value`) with its passwords masked, so it can be logged
/// and printed. One that cannot be parsed is masked whole: where its password ends is unknown.
pub fn redact_url(text: &str) -> String {
    match ConnInfo::parse(text) {
        Ok(info) => info.redacted(),
        Err(_) => MASK.to_string(),
    }
}

/// `message` (e.g. a libpq error, which may quote parts of the connection string) with every
/// secret of the connection string `connection` masked, as written, quoted or percent-encoded.
pub fn scrub_connection_secrets(message: &str, connection: &str) -> String {
    let Ok(info) = ConnInfo::parse(connection) else {
        return message.to_string();
    };
    let mut out = message.to_string();
    for secret in info.secrets() {
        if secret.chars().count() < SHORTEST_SCRUBBED_SECRET {
            continue;
        }
        for form in [percent_encode(&secret), quote_value(&secret), secret] {
            out = out.replace(&form, MASK);
        }
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
            "postgres://postgres@/usage?host=/tmp/x",
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
        assert_eq!(
            redact_url(r"host = db password = 's3 cr\'3t' dbname=usage"),
            "host=db password=*** dbname=usage"
        );
    }

    #[test]
    fn a_connection_string_that_cannot_be_parsed_is_masked_whole() {
        assert_eq!(redact_url("host=db password='s3cr3t"), MASK);
        assert_eq!(redact_url("host=db password=s3 cr3t"), MASK);
    }

    #[test]
    fn a_url_the_parser_refuses_loses_its_whole_user_info() {
        let redacted = redact_url("postgres://worker:s3cr3t@h1:5432,h2:5433/usage");
        assert!(!redacted.contains("s3cr3t"), "{redacted}");
        assert_eq!(redacted, "postgres://***@h1:5432,h2:5433/usage");
    }

    #[test]
    fn connection_secrets_are_scrubbed_from_messages_as_written_and_encoded() {
        let message = r#"database "x?password=p%40ss%20w" does not exist; p@ss w; pw"#;
        assert_eq!(
            scrub_connection_secrets(message, "host=h password='p@ss w'"),
            r#"database "x?password=***" does not exist; ***; pw"#
        );
        assert_eq!(scrub_connection_secrets("pw pw", "password=pw"), "pw pw");
    }

    #[test]
    fn masked_email_keeps_only_the_first_letter_and_the_domain() {
        assert_eq!(mask_email("alice@example.com"), "a***@example.com");
        assert_eq!(mask_email("not-an-address"), "***");
    }
}
