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
        Some((local, domain)) if !local.is_empty() => {
            let first: String = local.chars().take(1).collect();
            format!("{first}{MASK}@{domain}")
        }
        _ => MASK.into(),
    }
}

/// Characters of an address's local part (RFC 5322 `atext` and dots; any letter, for
/// internationalised addresses).
fn is_local_char(c: char) -> bool {
    c.is_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c)
}

fn is_domain_char(c: char) -> bool {
    c.is_alphanumeric() || c == '.' || c == '-'
}

/// Every `local@domain` token of a free text (an SMTP reply, an HTTP error) masked as
/// [`mask_email`] does, whatever its case and with or without angle brackets: a server may
/// quote the recipient in any form, or other addresses. Masking twice changes nothing more.
pub fn mask_addresses(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut search = 0;
    while let Some(offset) = chars[search..].iter().position(|&c| c == '@') {
        let at = search + offset;
        let mut start = at;
        while start > copied && is_local_char(chars[start - 1]) {
            start -= 1;
        }
        let mut end = at + 1;
        while end < chars.len() && is_domain_char(chars[end]) {
            end += 1;
        }
        // A sentence may end right after the address.
        while end > at + 1 && matches!(chars[end - 1], '.' | '-') {
            end -= 1;
        }
        if start == at || end == at + 1 {
            search = at + 1;
            continue;
        }
        out.extend(&chars[copied..start]);
        out.push(chars[start]);
        out.push_str(MASK);
        out.push('@');
        out.extend(&chars[at + 1..end]);
        copied = end;
        search = end;
    }
    out.extend(&chars[copied..]);
    out
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
        assert_eq!(mask_email("@example.com"), "***");
    }

    #[test]
    fn every_address_in_a_text_is_masked_whatever_its_case_or_brackets() {
        assert_eq!(
            mask_addresses(
                "550 5.1.1 <BOB.SMITH@EXAMPLE.COM>: unknown; relay for eve+x@mail.example.org. \
                 From jürgen@bücher.de"
            ),
            "550 5.1.1 <B***@EXAMPLE.COM>: unknown; relay for e***@mail.example.org. \
             From j***@bücher.de"
        );
    }

    #[test]
    fn text_without_addresses_is_unchanged_and_masking_twice_changes_nothing() {
        for text in [
            "",
            "no address here",
            "@ alone",
            "trailing@",
            "@leading",
            "a @ b",
        ] {
            assert_eq!(mask_addresses(text), text);
        }
        let once = mask_addresses("to alice@example.com, bob@example.com");
        assert_eq!(once, "to a***@example.com, b***@example.com");
        assert_eq!(mask_addresses(&once), once);
    }
}
