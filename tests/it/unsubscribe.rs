//! The SQL side of one-click unsubscribe and of the alert email preference, checked against
//! an HMAC of its own (ring), never the daemon's token code:
//! - `usage_hmac_sha256()` is HMAC-SHA256 (RFC 4231 vectors; random keys of 0 to 100 bytes,
//!   shorter and longer than the 64-byte block, and random messages).
//! - `usage_unsubscribe()` applies a token signed with a key registered in
//!   `usage_unsubscribe_keys` (an older key's too): scope `all` turns every alert email off,
//!   `quota` and `credit` one kind; applying it again changes nothing more; a token of a user
//!   who no longer exists returns no row.
//! - Altered (user, scope, expiry, key id or one MAC digit), foreign (unknown key id), forged
//!   (known key id, another secret), expired and malformed tokens are refused with SQLSTATE
//!   22023 naming why, and change no one's preference.
//! - `usage_set_alert_emails()` stores each preference and returns the one in effect ('none'
//!   while alerts are off); 22023 for another value, 23503 for an unknown user.
//! - The application's role (deploy/roles.sql) may call both functions but may neither read
//!   nor add signing keys, nor change the preference directly.
//!
//! Expiries are taken from the database's clock (usage_unsubscribe() compares with now()).

use std::cell::RefCell;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Binary, Nullable, Text};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use ring::{digest, hmac};
use usage_worker::db;

use crate::support::outcome::outcome;
use crate::support::roles::RolesDb;
use crate::support::{TestDb, count, text};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// HMAC-SHA256 by ring, in lowercase hex.
fn ring_hmac(key: &[u8], message: &[u8]) -> String {
    hex(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), message).as_ref())
}

/// `usage_hmac_sha256(key, message)` in lowercase hex (empty for NULL).
fn sql_hmac(conn: &mut PgConnection, key: &[u8], message: &[u8]) -> String {
    #[derive(QueryableByName)]
    struct T {
        #[diesel(sql_type = Nullable<Text>)]
        t: Option<String>,
    }
    diesel::sql_query("SELECT encode(usage_hmac_sha256($1, $2), 'hex') AS t")
        .bind::<Binary, _>(key)
        .bind::<Binary, _>(message)
        .get_result::<T>(conn)
        .unwrap_or_else(|e| panic!("usage_hmac_sha256 of a {}-byte key: {e}", key.len()))
        .t
        .unwrap_or_default()
}

#[test]
fn usage_hmac_sha256_is_hmac_sha256_for_any_key_and_message() {
    let db = TestDb::new();
    let mut conn = db.conn();
    // RFC 4231 test cases 1, 2 and 6 (a 131-byte key, hashed first).
    let vectors: [(Vec<u8>, &[u8], &str); 3] = [
        (
            vec![0x0b; 20],
            b"Hi There",
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
        ),
        (
            b"Jefe".to_vec(),
            b"what do ya want for nothing?",
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        ),
        (
            vec![0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
        ),
    ];
    for (key, message, expected) in &vectors {
        assert_eq!(
            ring_hmac(key, message),
            *expected,
            "ring, {}-byte key",
            key.len()
        );
        assert_eq!(
            sql_hmac(&mut conn, key, message),
            *expected,
            "{}-byte key",
            key.len()
        );
    }
    // Around the block size, and nothing at all.
    for len in [0usize, 1, 31, 32, 63, 64, 65, 100] {
        let key: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
        for message in [&b""[..], b"u1.1.all.1800000000.0123456789abcdef"] {
            assert_eq!(
                sql_hmac(&mut conn, &key, message),
                ring_hmac(&key, message),
                "{len}-byte key, {}-byte message",
                message.len()
            );
        }
    }
    assert_eq!(
        text(
            &mut conn,
            "SELECT usage_hmac_sha256(NULL, 'x'::bytea)::text AS t"
        ),
        "",
        "NULL key"
    );

    let conn = RefCell::new(conn);
    let mut runner = TestRunner::new(Config {
        cases: 64,
        ..Config::default()
    });
    let strategy = (
        prop::collection::vec(any::<u8>(), 0..=100),
        prop::collection::vec(any::<u8>(), 0..300),
    );
    runner
        .run(&strategy, |(key, message)| {
            let got = sql_hmac(&mut conn.borrow_mut(), &key, &message);
            prop_assert_eq!(got, ring_hmac(&key, &message), "key {}", hex(&key));
            Ok(())
        })
        .unwrap();
}

/// A signing key as the daemon derives one: 32 bytes, and its id the first 16 hex digits of
/// their SHA-256.
struct SigningKey {
    id: String,
    secret: Vec<u8>,
}

impl SigningKey {
    fn new(label: &str) -> SigningKey {
        let secret = digest::digest(&digest::SHA256, label.as_bytes())
            .as_ref()
            .to_vec();
        let id = hex(digest::digest(&digest::SHA256, &secret).as_ref())[..16].to_string();
        SigningKey { id, secret }
    }

    /// Registers it in usage_unsubscribe_keys, as the daemon does.
    fn register(&self, conn: &mut PgConnection) {
        conn.batch_execute(&format!(
            "INSERT INTO usage_unsubscribe_keys (key_id, signing_key)
             VALUES ('{}', '\\x{}'::bytea)",
            self.id,
            hex(&self.secret)
        ))
        .expect("register the signing key");
    }

    /// `u1.<user>.<scope>.<expires>.<key id>.<mac>`.
    fn token(&self, user: i64, scope: &str, expires: i64) -> String {
        sign(
            &format!("u1.{user}.{scope}.{expires}.{}", self.id),
            &self.secret,
        )
    }
}

/// `body.<HMAC-SHA256 of body under secret>`.
fn sign(body: &str, secret: &[u8]) -> String {
    format!("{body}.{}", ring_hmac(secret, body.as_bytes()))
}

/// The database clock in Unix seconds, `offset` seconds from now.
fn db_unix(conn: &mut PgConnection, offset: i64) -> i64 {
    count(
        conn,
        &format!("SELECT extract(epoch FROM now())::bigint + {offset} AS n"),
    )
    .unwrap()
}

/// A SQL literal of `token` (None: NULL).
fn literal(token: Option<&str>) -> String {
    token.map_or("NULL".to_string(), |t| {
        format!("'{}'", t.replace('\'', "''"))
    })
}

/// What `usage_unsubscribe(token)` returned, as `user unsubscribed alert_emails` lines.
fn unsubscribe(conn: &mut PgConnection, token: &str) -> String {
    text(
        conn,
        &format!(
            "SELECT COALESCE(string_agg(format('%s %s %s', user_id, unsubscribed, alert_emails),
                                        '; '), '') AS t
               FROM usage_unsubscribe({})",
            literal(Some(token))
        ),
    )
}

/// Every user's stored preference: `id pref, …`.
fn preferences(conn: &mut PgConnection) -> String {
    text(
        conn,
        "SELECT string_agg(id || ' ' || alert_emails, ', ' ORDER BY id) AS t FROM users",
    )
}

/// Users 1, 2 and 3 with the default preference, `all`; keys A (current) and B (an earlier
/// secret, still registered) of this installation.
fn seed(db: &TestDb) -> (PgConnection, SigningKey, SigningKey) {
    let mut conn = db.conn();
    conn.batch_execute(
        "INSERT INTO users (id, email) VALUES (1, 'ada@example.com'), (2, 'bob@example.com'),
                                              (3, 'cy@example.com')",
    )
    .unwrap();
    let (a, b) = (SigningKey::new("key A"), SigningKey::new("key B"));
    a.register(&mut conn);
    b.register(&mut conn);
    (conn, a, b)
}

#[test]
fn a_valid_token_turns_alert_emails_off_and_applying_it_twice_changes_nothing_more() {
    let db = TestDb::new();
    let (mut conn, a, b) = seed(&db);
    let tomorrow = db_unix(&mut conn, 86_400);
    let token = a.token(1, "all", tomorrow);
    assert_eq!(unsubscribe(&mut conn, &token), "1 all none");
    assert_eq!(preferences(&mut conn), "1 none, 2 all, 3 all");
    assert_eq!(
        unsubscribe(&mut conn, &token),
        "1 all none",
        "applied twice"
    );
    assert_eq!(preferences(&mut conn), "1 none, 2 all, 3 all");
    // A token signed with an earlier key, still registered, works as well; one that expires
    // a minute from now has not expired.
    let token = b.token(2, "all", db_unix(&mut conn, 60));
    assert_eq!(unsubscribe(&mut conn, &token), "2 all none");
    assert_eq!(preferences(&mut conn), "1 none, 2 none, 3 all");
    // A user who no longer exists: no row, nothing changed.
    conn.batch_execute("DELETE FROM users WHERE id = 3")
        .unwrap();
    assert_eq!(unsubscribe(&mut conn, &a.token(3, "all", tomorrow)), "");
    assert_eq!(preferences(&mut conn), "1 none, 2 none");
}

#[test]
fn quota_and_credit_tokens_take_one_kind_of_alert_email_away() {
    let db = TestDb::new();
    let (mut conn, a, _) = seed(&db);
    let tomorrow = db_unix(&mut conn, 86_400);
    // (preference before, scope, after).
    #[rustfmt::skip]
    let cases = [
        ("all", "quota", "credit"), ("all", "credit", "quota"), ("all", "all", "none"),
        ("quota", "quota", "none"), ("quota", "credit", "quota"), ("quota", "all", "none"),
        ("credit", "quota", "credit"), ("credit", "credit", "none"), ("credit", "all", "none"),
        ("none", "quota", "none"), ("none", "credit", "none"), ("none", "all", "none"),
    ];
    for (before, scope, after) in cases {
        conn.batch_execute(&format!(
            "UPDATE users SET alert_emails = '{before}' WHERE id = 1"
        ))
        .unwrap();
        let token = a.token(1, scope, tomorrow);
        assert_eq!(
            unsubscribe(&mut conn, &token),
            format!("1 {scope} {after}"),
            "{before}, then a {scope} token"
        );
        assert_eq!(
            preferences(&mut conn),
            format!("1 {after}, 2 all, 3 all"),
            "{before}, then a {scope} token"
        );
        // Again: already off.
        assert_eq!(unsubscribe(&mut conn, &token), format!("1 {scope} {after}"));
    }
}

#[test]
fn altered_foreign_expired_and_malformed_tokens_are_refused_and_change_nothing() {
    let db = TestDb::new();
    let (mut conn, a, b) = seed(&db);
    conn.batch_execute("UPDATE users SET alert_emails = 'quota' WHERE id = 2")
        .unwrap();
    let stranger = SigningKey::new("another installation's key");
    let tomorrow = db_unix(&mut conn, 86_400);
    let valid = a.token(1, "quota", tomorrow);
    let mac = &valid[valid.len() - 64..];
    let body = |user: i64, scope: &str, expires: i64, key: &str| {
        format!("u1.{user}.{scope}.{expires}.{key}")
    };
    let last = mac.chars().last().unwrap();
    let other_digit = if last == '0' { '1' } else { '0' };
    let one_digit_off = format!("{}{other_digit}", &valid[..valid.len() - 1]);
    let altered = "signature does not match";
    let foreign = "another installation";
    let malformed = "not an unsubscribe token";
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        // Altered: the MAC of the original over another text.
        (
            "another user",
            Some(format!("{}.{mac}", body(2, "quota", tomorrow, &a.id))),
            altered,
        ),
        (
            "another scope",
            Some(format!("{}.{mac}", body(1, "all", tomorrow, &a.id))),
            altered,
        ),
        (
            "a later expiry",
            Some(format!(
                "{}.{mac}",
                body(1, "quota", tomorrow + 86_400, &a.id)
            )),
            altered,
        ),
        (
            "another known key id",
            Some(format!("{}.{mac}", body(1, "quota", tomorrow, &b.id))),
            altered,
        ),
        ("one MAC digit", Some(one_digit_off), altered),
        // Signed by another installation: its key id is unknown here.
        (
            "an unknown key",
            Some(stranger.token(1, "all", tomorrow)),
            foreign,
        ),
        // A known key id with another secret: a forgery.
        (
            "a forged MAC",
            Some(sign(&body(1, "all", tomorrow, &a.id), &stranger.secret)),
            altered,
        ),
        // Expired a minute ago, otherwise valid.
        (
            "expired",
            Some(a.token(1, "all", db_unix(&mut conn, -60))),
            "expired",
        ),
        // Not a token at all.
        ("empty", Some(String::new()), malformed),
        ("NULL", None, malformed),
        ("garbage", Some("garbage".to_string()), malformed),
        (
            "a quote",
            Some("u1.1.all.'; DELETE FROM users; --".to_string()),
            malformed,
        ),
        ("a trailing newline", Some(format!("{valid}\n")), malformed),
        ("a leading space", Some(format!(" {valid}")), malformed),
        (
            "an upper-case MAC",
            Some(format!(
                "{}.{}",
                &valid[..valid.len() - 65],
                mac.to_uppercase()
            )),
            malformed,
        ),
        (
            "a short MAC",
            Some(valid[..valid.len() - 1].to_string()),
            malformed,
        ),
        ("a trailing part", Some(format!("{valid}.x")), malformed),
        (
            "another version",
            Some(format!("u2{}", &valid[2..])),
            malformed,
        ),
        (
            "an unknown scope",
            Some(sign(&body(1, "webhooks", tomorrow, &a.id), &a.secret)),
            malformed,
        ),
        (
            "a negative user",
            Some(sign(&body(-1, "all", tomorrow, &a.id), &a.secret)),
            malformed,
        ),
        (
            "a user id past bigint",
            Some(sign(
                &format!("u1.99999999999999999999.all.{tomorrow}.{}", a.id),
                &a.secret,
            )),
            malformed,
        ),
        (
            "a short key id",
            Some(sign(&body(1, "all", tomorrow, &a.id[..15]), &a.secret)),
            malformed,
        ),
    ];
    let before = preferences(&mut conn);
    assert_eq!(before, "1 all, 2 quota, 3 all");
    for (what, token, expected) in cases {
        let sql = format!(
            "SELECT * FROM usage_unsubscribe({})",
            literal(token.as_deref())
        );
        let failure = outcome(&mut conn, &sql)
            .err()
            .unwrap_or_else(|| panic!("{what}: {token:?} was accepted"));
        assert_eq!(failure.sqlstate, "22023", "{what}: {failure:?}");
        assert!(
            failure.message.contains(expected),
            "{what}: expected {expected:?} in {:?}",
            failure.message
        );
        assert_eq!(
            preferences(&mut conn),
            before,
            "{what}: a preference changed"
        );
    }
    // The untouched token still works: the refusals were about the tokens.
    assert_eq!(unsubscribe(&mut conn, &valid), "1 quota credit");
}

/// `usage_set_alert_emails(user, value)`: what it returned, or the SQLSTATE it failed with.
fn set_alert_emails(conn: &mut PgConnection, user: i64, value: &str) -> String {
    let sql = format!("SELECT usage_set_alert_emails({user}, {value})");
    if let Err(failure) = outcome(conn, &sql) {
        return failure.sqlstate;
    }
    text(
        conn,
        &format!("SELECT usage_set_alert_emails({user}, {value}) AS t"),
    )
}

#[test]
fn usage_set_alert_emails_stores_the_preference_and_returns_the_one_in_effect() {
    let db = TestDb::new();
    let (mut conn, _, _) = seed(&db);
    for value in ["quota", "credit", "none", "all"] {
        assert_eq!(set_alert_emails(&mut conn, 1, &format!("'{value}'")), value);
        assert_eq!(preferences(&mut conn), format!("1 {value}, 2 all, 3 all"));
    }
    // Alerts off: 'none' is in effect, whatever is stored; back on, the stored one is.
    conn.batch_execute("UPDATE users SET alerts_enabled = false WHERE id = 2")
        .unwrap();
    for value in ["all", "quota", "credit", "none"] {
        assert_eq!(
            set_alert_emails(&mut conn, 2, &format!("'{value}'")),
            "none"
        );
        assert_eq!(preferences(&mut conn), format!("1 all, 2 {value}, 3 all"));
    }
    set_alert_emails(&mut conn, 2, "'credit'");
    conn.batch_execute("UPDATE users SET alerts_enabled = true WHERE id = 2")
        .unwrap();
    assert_eq!(set_alert_emails(&mut conn, 2, "'credit'"), "credit");

    let before = preferences(&mut conn);
    for value in ["'ALL'", "'some'", "''", "'none '", "NULL"] {
        assert_eq!(set_alert_emails(&mut conn, 1, value), "22023", "{value}");
        assert_eq!(preferences(&mut conn), before, "{value}");
    }
    assert_eq!(set_alert_emails(&mut conn, 99, "'none'"), "23503");
    assert_eq!(preferences(&mut conn), before, "user 99");
    let users = count(&mut conn, "SELECT count(*) AS n FROM users").unwrap();
    assert_eq!(users, 3, "a user was created");
}

#[test]
fn the_application_role_unsubscribes_and_sets_preferences_but_cannot_touch_the_keys() {
    let roles = RolesDb::new("unsubscribe_roles", "usage");
    roles.migrate_as_owner();
    let key = SigningKey::new("key A");
    let mut admin = roles.admin();
    admin
        .batch_execute(
            "SET search_path = usage;
             INSERT INTO users (id, email) VALUES (1, 'ada@example.com'), (2, 'bob@example.com');",
        )
        .unwrap();
    key.register(&mut admin);
    let tomorrow = db_unix(&mut admin, 86_400);

    let mut app = db::connect(&roles.url_as(&roles.writer)).expect("connect as the writer");
    app.batch_execute("SET search_path = usage").unwrap();
    let unsubscribed = outcome(
        &mut app,
        &format!(
            "SELECT * FROM usage_unsubscribe('{}')",
            key.token(1, "quota", tomorrow)
        ),
    );
    assert_eq!(
        unsubscribed,
        Ok(()),
        "the writer applies an unsubscribe token"
    );
    let set = outcome(&mut app, "SELECT usage_set_alert_emails(2, 'credit')");
    assert_eq!(set, Ok(()), "the writer sets a preference");
    assert_eq!(preferences(&mut admin), "1 credit, 2 credit");

    // The signing keys would let it sign tokens for anyone; the preference changes only
    // through the functions.
    for sql in [
        "SELECT count(*) FROM usage_unsubscribe_keys".to_string(),
        format!(
            "INSERT INTO usage_unsubscribe_keys (key_id, signing_key)
             VALUES ('0123456789abcdef', '\\x{}'::bytea)",
            "00".repeat(32)
        ),
        "UPDATE users SET alert_emails = 'all' WHERE id = 1".to_string(),
    ] {
        let refused = outcome(&mut app, &sql).err();
        assert_eq!(
            refused.as_ref().map(|f| f.sqlstate.as_str()),
            Some("42501"),
            "{sql}: {refused:?}"
        );
    }
    assert_eq!(preferences(&mut admin), "1 credit, 2 credit");
    let keys = count(
        &mut admin,
        "SELECT count(*) AS n FROM usage_unsubscribe_keys",
    )
    .unwrap();
    assert_eq!(keys, 1);
}
