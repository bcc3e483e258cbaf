//! The parser against libpq's rules, and round trips of quoting and encoding.

use super::*;

fn pairs(text: &str) -> Vec<(String, String)> {
    parse_key_values(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn owned(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn key_values_are_parsed_as_libpq_parses_them() {
    assert_eq!(
        pairs("host=/run/postgresql  dbname = usage\tport= 5432 "),
        owned(&[
            ("host", "/run/postgresql"),
            ("dbname", "usage"),
            ("port", "5432")
        ])
    );
    assert_eq!(
        pairs(r"password='it\'s' user=a\ b options='-c x=\'y\' \\'"),
        owned(&[
            ("password", "it's"),
            ("user", "a b"),
            ("options", r"-c x='y' \")
        ])
    );
    assert_eq!(pairs("password=''"), owned(&[("password", "")]));
    assert_eq!(pairs(""), owned(&[]));
}

#[test]
fn malformed_key_values_are_refused_without_quoting_any_value() {
    let error = parse_key_values("host=x password=hunter2 secret").unwrap_err();
    assert_eq!(
        error,
        ConnInfoError::MissingEquals("after the value of `password`".into())
    );
    assert!(!error.to_string().contains("secret"), "{error}");
    let error = parse_key_values("password='hunter2").unwrap_err();
    assert_eq!(error, ConnInfoError::UnterminatedQuote("password".into()));
    assert!(!error.to_string().contains("hunter2"), "{error}");
    assert_eq!(
        parse_key_values("password='x\\").unwrap_err(),
        ConnInfoError::UnterminatedQuote("password".into())
    );
    assert_eq!(
        parse_key_values(" =x").unwrap_err(),
        ConnInfoError::EmptyKeyword
    );
}

#[test]
fn a_quoted_value_reads_back_as_written() {
    for value in [
        "plain",
        "",
        "a b",
        "it's",
        r"back\slash",
        r"\'",
        "tab\tnl\n",
        "é ü",
    ] {
        let text = format!("password={}", quote_value(value));
        assert_eq!(pairs(&text), owned(&[("password", value)]), "{text}");
    }
}

#[test]
fn a_password_added_to_key_values_is_quoted_and_replaces_an_earlier_one() {
    let info = ConnInfo::parse("host=/tmp password=old dbname=usage").unwrap();
    let text = info.with("password", "n w'\\");
    assert_eq!(text, r"host=/tmp dbname=usage password='n w\'\\'");
    assert_eq!(
        pairs(&text),
        owned(&[
            ("host", "/tmp"),
            ("dbname", "usage"),
            ("password", "n w'\\")
        ])
    );
}

#[test]
fn a_password_added_to_a_uri_is_percent_encoded() {
    for (uri, expected) in [
        (
            "postgres://worker@db.internal/usage",
            "postgres://worker@db.internal/usage?password=p%40ss%20w%2Brd%26%3D",
        ),
        (
            "postgres://worker@db/usage?sslmode=require&password=old",
            "postgres://worker@db/usage?sslmode=require&password=p%40ss%20w%2Brd%26%3D",
        ),
        (
            "postgres://postgres@/usage?host=/tmp/x",
            "postgres://postgres@/usage?host=/tmp/x&password=p%40ss%20w%2Brd%26%3D",
        ),
        (
            "postgresql://h1:5432,h2:5433/usage",
            "postgresql://h1:5432,h2:5433/usage?password=p%40ss%20w%2Brd%26%3D",
        ),
    ] {
        let info = ConnInfo::parse(uri).unwrap();
        let text = info.with("password", "p@ss w+rd&=");
        assert_eq!(text, expected);
        assert_eq!(
            ConnInfo::parse(&text).unwrap().secrets(),
            ["p@ss w+rd&="],
            "{text}"
        );
    }
}

#[test]
fn secrets_are_masked_in_both_forms_and_found_decoded() {
    let info = ConnInfo::parse(r"host = h password = 'a b\'c' sslpassword=k").unwrap();
    assert_eq!(info.redacted(), "host=h password=*** sslpassword=***");
    assert_eq!(info.secrets(), ["a b'c", "k"]);
    let info = ConnInfo::parse("postgres://u:p%40w@h/db?sslpassword=k&sslmode=require").unwrap();
    assert_eq!(
        info.redacted(),
        "postgres://u:***@h/db?sslpassword=***&sslmode=require"
    );
    assert_eq!(info.secrets(), ["k", "p@w"]);
    let info = ConnInfo::parse("postgres://u:pw@h1:1,h2:2/db").unwrap();
    assert_eq!(info.redacted(), "postgres://***@h1:1,h2:2/db");
    assert_eq!(info.secrets(), ["pw"]);
    let info = ConnInfo::parse(
        "postgresql://worker:s3cr%40t@db-a:5432,db-b:5433/usage?target_session_attrs=read-write",
    )
    .unwrap();
    assert_eq!(
        info.redacted(),
        "postgresql://***@db-a:5432,db-b:5433/usage?target_session_attrs=read-write"
    );
    assert_eq!(info.secrets(), ["s3cr@t"]);
    let info = ConnInfo::parse(
        "host=db-a,db-b port=5432,5433 password='p w' target_session_attrs=read-write",
    )
    .unwrap();
    assert_eq!(
        info.redacted(),
        "host=db-a,db-b port=5432,5433 password=*** target_session_attrs=read-write"
    );
}

#[test]
fn the_target_names_the_host_and_port_or_the_socket() {
    for (text, target) in [
        (
            "host=127.0.0.1 port=1 password=x dbname=x",
            "host 127.0.0.1 port 1",
        ),
        ("hostaddr=10.0.0.1 dbname=x", "host 10.0.0.1"),
        (
            "host='/run/pg sql' port=5433",
            "socket /run/pg sql/.s.PGSQL.5433",
        ),
        (
            "postgres://u:pw@db.internal:6432/x",
            "host db.internal port 6432",
        ),
        (
            "postgres://u@/x?host=%2Frun%2Fpg",
            "socket /run/pg/.s.PGSQL.5432",
        ),
        ("postgres://[::1]/x", "host [::1]"),
        ("postgres://h1:1,h2:2/x", "hosts h1:1, h2:2"),
        (
            "postgresql://u:pw@db-a:5432,db-b:5433/usage?target_session_attrs=read-write",
            "hosts db-a:5432, db-b:5433",
        ),
        ("postgres://u@a,b/x", "hosts a, b"),
        (
            "host=db-a,db-b port=5432,5433 target_session_attrs=read-write",
            "hosts db-a:5432, db-b:5433",
        ),
        ("host=db-a,db-b port=6432", "hosts db-a:6432, db-b:6432"),
        (
            "host=/run/pg,db-b",
            "hosts socket /run/pg/.s.PGSQL.5432, db-b",
        ),
        ("dbname=x", ""),
    ] {
        assert_eq!(ConnInfo::parse(text).unwrap().target(), target, "{text}");
    }
}
