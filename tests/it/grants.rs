//! Credit grants (`usage_grant()`, `usage_void_grant()`): bad arguments are refused naming
//! the argument and record nothing; usage past the plan's limit draws the grants active at
//! its instant down, earliest expiry first, each at most its amount over its life, the
//! balance carrying into later periods until expiry (invariant 11); the aggregate job records
//! exactly that (`usage_grant_draws`); the answers count the balance before and after
//! `aggregate` (hard limits: `grants_limits`; the books: `grants_property`).
//! Every date is a fixed instant in 2026, or taken from the database's clock.

use diesel::pg::PgConnection;

use crate::support::outcome::outcome;
use crate::support::quota::add_new_events_to_periods;
use crate::support::{TestDb, text};

/// Plan 1 limits tokens to 1000 a month (soft); messages are unlimited. User 1 (UTC, calendar
/// months) is on it, and organization 7 (UTC) with user 2 as its owner.
pub(crate) fn seed(db: &TestDb) {
    db.execute(
        "INSERT INTO plans (id, name) VALUES (1, 'team');
         INSERT INTO plan_limits (plan_id, metric, period, kind, max_value)
         VALUES (1, 'tokens', 'month', '', 1000);
         INSERT INTO users (id, email, plan_id) VALUES (1, 'ada@example.com', 1),
                                                  (2, 'bob@example.com', NULL);
         INSERT INTO organizations (id, name, plan_id) VALUES (7, 'Acme', 1);
         INSERT INTO organization_members (org_id, user_id, role) VALUES (7, 2, 'owner');",
    );
}

/// A grant of `amount` of `metric` per month to `who` (`p_user_id => 1`), usable in
/// [starts, expires). Its id.
pub(crate) fn grant(db: &TestDb, who: &str, metric: &str, amount: i64, span: (&str, &str)) -> i64 {
    db.count(&format!(
        "SELECT usage_grant({who}, p_metric => '{metric}', p_amount => {amount},
                           p_starts_at => '{}', p_expires_at => '{}', p_reason => 'test') AS n",
        span.0, span.1
    ))
}

/// Events of (tokens, created_at): user 1's own (`org` None) or spent by user 2 in `org`.
pub(crate) fn spend(db: &TestDb, org: Option<i64>, events: &[(i64, &str)]) {
    let (user, org) = org.map_or((1, "NULL".to_string()), |o| (2, o.to_string()));
    let rows: Vec<String> = events
        .iter()
        .map(|(tokens, at)| format!("({user}, {org}, 'ai_response', {tokens}, '{at}')"))
        .collect();
    db.execute(&format!(
        "INSERT INTO usage_events (user_id, org_id, kind, tokens, created_at) VALUES {}",
        rows.join(", ")
    ));
}

/// What each grant gave per month, `grant month drawn`, from `rows` (grant_id, period_start,
/// drawn).
fn listed(conn: &mut PgConnection, rows: &str) -> String {
    text(
        conn,
        &format!(
            "SELECT COALESCE(string_agg(format('%s %s %s', grant_id,
                        to_char(period_start AT TIME ZONE 'UTC', 'YYYY-MM'), drawn), ', '
                    ORDER BY grant_id, period_start), '') AS t
               FROM ({rows}) r"
        ),
    )
}

/// The draws the aggregate job recorded.
pub(crate) fn draws(db: &TestDb) -> String {
    listed(&mut db.conn(), "SELECT * FROM usage_grant_draws")
}

/// The drawdown of the counted events, computed afresh (usage_grant_ledger, not pending).
pub(crate) fn ledger(db: &TestDb) -> String {
    listed(
        &mut db.conn(),
        "SELECT l.* FROM (SELECT DISTINCT user_id, org_id, metric, period, kind FROM usage_grants) k
          CROSS JOIN LATERAL usage_grant_ledger(k.user_id, k.org_id, k.metric, k.period, k.kind,
                                                'infinity', false) l",
    )
}

/// The recorded draws are the ledger's, and no grant gave more than its amount.
pub(crate) fn assert_books_hold(db: &TestDb, when: &str) {
    assert_eq!(
        draws(db),
        ledger(db),
        "{when}: recorded draws against the ledger"
    );
    let over = db.count(
        "SELECT count(*) AS n FROM usage_grants g
          WHERE (SELECT sum(drawn) FROM usage_grant_draws d WHERE d.grant_id = g.id) > g.amount",
    );
    assert_eq!(over, 0, "{when}: a grant gave more than its amount");
}

/// The monthly token row of `call` (`quota_status(1, '…')`), as `used remaining exceeded
/// granted grant_remaining`.
pub(crate) fn tokens(db: &TestDb, call: &str) -> String {
    text(
        &mut db.conn(),
        &format!(
            "SELECT format('used %s remaining %s exceeded %s granted %s grant_remaining %s',
                           used, remaining, exceeded::text, granted, grant_remaining) AS t
               FROM {call} WHERE metric = 'tokens' AND period = 'month' AND kind = ''"
        ),
    )
}

/// Runs `sql`: `00000`, or the SQLSTATE and message it failed with.
pub(crate) fn refusal(db: &TestDb, sql: &str) -> String {
    match outcome(&mut db.conn(), sql) {
        Ok(()) => "00000".to_string(),
        Err(f) => format!("{} {}", f.sqlstate, f.message),
    }
}

#[test]
fn bad_arguments_are_refused_naming_the_argument_and_record_nothing() {
    let db = TestDb::new();
    seed(&db);
    let (nov, dec) = ("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z");
    let voided = grant(&db, "p_user_id => 1", "tokens", 5, (nov, dec));
    db.execute(&format!("SELECT usage_void_grant({voided}, 'first')"));
    // (subject, metric, amount, period, expires_at; starts_at is November 1st): the error.
    #[rustfmt::skip]
    let cases = [
        ("p_user_id => 1", "tokens", "0", "month", dec, "22023", "p_amount"),
        ("p_user_id => 1", "tokens", "-5", "month", dec, "22023", "p_amount"),
        ("p_user_id => 1", "apples", "5", "month", dec, "22023", "p_metric"),
        ("p_user_id => 1", "tokens", "5", "week", dec, "22023", "p_period"),
        ("p_user_id => 1", "tokens", "5", "month", nov, "22023", "p_expires_at"),
        ("p_user_id => 1", "tokens", "5", "month", "2026-10-01T00:00:00Z", "22023", "p_expires_at"),
        ("p_user_id => 1, p_org_id => 7", "tokens", "5", "month", dec, "22023", "p_user_id"),
        ("p_reason => 'nobody'", "tokens", "5", "month", dec, "22023", "p_org_id"),
        ("p_user_id => 99", "tokens", "5", "month", dec, "23503", "user 99"),
        ("p_org_id => 99", "tokens", "5", "month", dec, "23503", "organization 99"),
    ];
    let rows = "SELECT count(*) AS n FROM usage_grants";
    let before = db.count(rows);
    for (who, metric, amount, period, expires, code, names) in cases {
        let sql = format!(
            "SELECT usage_grant({who}, p_metric => '{metric}', p_amount => {amount},
                               p_period => '{period}', p_starts_at => '{nov}',
                               p_expires_at => '{expires}')"
        );
        let got = refusal(&db, &sql);
        assert!(got.starts_with(code) && got.contains(names), "{sql}: {got}");
        assert_eq!(db.count(rows), before, "{sql}: a grant was recorded");
    }
    let voids = "SELECT string_agg(format('%s %s %s', id, voided_at, void_reason), ',') AS t
                   FROM usage_grants";
    let voids_before = text(&mut db.conn(), voids);
    for (id, names) in [(voided, "voided already"), (424242, "grant 424242")] {
        let got = refusal(&db, &format!("SELECT usage_void_grant({id}, 'again')"));
        assert!(
            got.starts_with("22023 ") && got.contains(names),
            "{id}: {got}"
        );
        assert_eq!(text(&mut db.conn(), voids), voids_before, "{id}: changed");
    }
    assert_eq!(db.count(rows), before);
}

#[test]
fn an_organization_id_that_cannot_exist_is_refused_not_taken_for_user_0s_quota() {
    let db = TestDb::new();
    seed(&db);
    // 0 is a legal application user id; organization ids are above 0, and (0, 0) is user
    // 0's personal quota, so p_org_id => 0 must not reach it.
    db.add_user(0, "UTC");
    let rows = "SELECT count(*) AS n FROM usage_grants";
    for org in [0, -3] {
        let sql = format!(
            "SELECT usage_grant(p_org_id => {org}, p_metric => 'tokens', p_amount => 5,
                               p_starts_at => '2026-11-01T00:00:00Z',
                               p_expires_at => '2026-12-01T00:00:00Z')"
        );
        let got = refusal(&db, &sql);
        assert!(
            (got.starts_with("22023 ") || got.starts_with("23503 "))
                && got.contains(&format!("organization {org}")),
            "p_org_id => {org}: {got}"
        );
        assert_eq!(db.count(rows), 0, "p_org_id => {org}: a grant was recorded");
    }
}

/// User 1's grants, and events of September 2026 (hand-computed in the tests): grant 1: 500
/// Sep 1–Dec 1; 2: 300 Sep 1–Oct 15 (made later, expires first); 3: 400 Sep 1–Nov 20, voided
/// Sep 20; 4: 150 Oct 10–Oct 20 (starts and expires mid-month); 5: 500 Nov 15–Jan 1 (starts
/// mid-month); 6: 100 messages, which the plan does not limit.
fn september(db: &TestDb) {
    let grants = [
        (
            "tokens",
            500,
            "2026-09-01T00:00:00Z",
            "2026-12-01T00:00:00Z",
        ),
        (
            "tokens",
            300,
            "2026-09-01T00:00:00Z",
            "2026-10-15T00:00:00Z",
        ),
        (
            "tokens",
            400,
            "2026-09-01T00:00:00Z",
            "2026-11-20T00:00:00Z",
        ),
        (
            "tokens",
            150,
            "2026-10-10T00:00:00Z",
            "2026-10-20T00:00:00Z",
        ),
        (
            "tokens",
            500,
            "2026-11-15T00:00:00Z",
            "2027-01-01T00:00:00Z",
        ),
        (
            "messages",
            100,
            "2026-09-01T00:00:00Z",
            "2027-01-01T00:00:00Z",
        ),
    ];
    for (n, (metric, amount, starts, expires)) in grants.into_iter().enumerate() {
        let id = grant(db, "p_user_id => 1", metric, amount, (starts, expires));
        assert_eq!(id, n as i64 + 1, "grant ids are the tests' numbers");
    }
    // Voided at a fixed instant, as usage_void_grant() does at now().
    db.execute(
        "UPDATE usage_grants SET voided_at = '2026-09-20T00:00:00Z', voided_by = 'test',
                                 settled = false WHERE id = 3",
    );
    db.execute(
        "INSERT INTO usage_events (user_id, kind, tokens, messages, created_at)
         VALUES (1, 'ai_response', 1400, 500, '2026-09-05T00:00:00Z'),
                (1, 'ai_response', 200, 0, '2026-09-25T00:00:00Z')",
    );
}

/// User 1's events of October and November 2026.
fn october_and_november(db: &TestDb) {
    let events = [
        (1000, "2026-10-05T00:00:00Z"),
        (100, "2026-10-08T00:00:00Z"),
        (100, "2026-10-12T00:00:00Z"),
        (100, "2026-10-22T00:00:00Z"),
        (1050, "2026-11-03T00:00:00Z"),
        (100, "2026-11-10T00:00:00Z"),
        (30, "2026-11-20T00:00:00Z"),
    ];
    spend(db, None, &events);
}

#[test]
fn usage_past_the_plan_draws_active_grants_earliest_expiry_first_exactly() {
    let db = TestDb::new();
    seed(&db);
    september(&db);
    add_new_events_to_periods(&mut db.conn());
    // September: 400 over on the 5th: grant 2 (expires first) 300, then 3 100; 200 over on
    // the 25th: 3 is voided since the 20th, so grant 1 gives them.
    assert_eq!(draws(&db), "1 2026-09 200, 2 2026-09 300, 3 2026-09 100");
    october_and_november(&db);
    add_new_events_to_periods(&mut db.conn());
    // October: 100 over on the 8th from 1 (4 starts on the 10th and takes none of it); 100
    // on the 12th from 4 (expires first); 100 on the 22nd from 1 (4 expired with 50 left).
    // November: 1 carries 100: 50 over on the 3rd and 50 of the 100 on the 10th; the other
    // 50 are over the limit with nothing left (5 starts on the 15th); 30 on the 20th from 5.
    // Messages are unlimited: grant 6 gives nothing.
    assert_eq!(
        draws(&db),
        "1 2026-09 200, 1 2026-10 200, 1 2026-11 100, 2 2026-09 300, 3 2026-09 100, \
         4 2026-10 100, 5 2026-11 30"
    );
    assert_books_hold(&db, "after three months");
}

#[test]
fn quota_status_counts_the_balance_the_same_before_and_after_aggregate() {
    let db = TestDb::new();
    seed(&db);
    september(&db);
    october_and_november(&db);
    let expected = [
        // Grants 1 and 2 are active (800). What they have left is counted after every event,
        // later ones included: 2 gave its 300 in September, 1 its last in November. So an
        // event recorded late into September cannot spend what November has drawn.
        (
            "2026-09-30T12:00:00Z",
            "used 1600 remaining 0 exceeded true granted 800 grant_remaining 0",
        ),
        // Grant 1 is used up, 5 not started: over the limit.
        (
            "2026-11-12T00:00:00Z",
            "used 1180 remaining 0 exceeded true granted 500 grant_remaining 0",
        ),
        (
            "2026-11-25T00:00:00Z",
            "used 1180 remaining 470 exceeded false granted 1000 grant_remaining 470",
        ),
        // December, no use yet: the plan's 1000 and what 5 carries over.
        (
            "2026-12-05T00:00:00Z",
            "used 0 remaining 1470 exceeded false granted 500 grant_remaining 470",
        ),
    ];
    for aggregated in [false, true] {
        if aggregated {
            add_new_events_to_periods(&mut db.conn());
        }
        for (at, status) in expected {
            let call = format!("quota_status(1, '{at}')");
            assert_eq!(
                tokens(&db, &call),
                status,
                "{call}, aggregated: {aggregated}"
            );
        }
    }
    let messages = "SELECT format('%s %s %s', remaining, granted, grant_remaining) AS t
                      FROM quota_status(1, '2026-09-30T12:00:00Z')
                     WHERE metric = 'messages' AND period = 'month'";
    assert_eq!(text(&mut db.conn(), messages), " 100 100", "unlimited");
}

#[test]
fn org_quota_status_counts_the_organizations_balance() {
    let db = TestDb::new();
    seed(&db);
    let id = grant(
        &db,
        "p_org_id => 7",
        "tokens",
        300,
        ("2026-09-01T00:00:00Z", "2027-01-01T00:00:00Z"),
    );
    spend(&db, Some(7), &[(1200, "2026-10-05T00:00:00Z")]);
    let october = "org_quota_status(7, '2026-10-20T00:00:00Z')";
    let november = "org_quota_status(7, '2026-11-15T00:00:00Z')";
    let check = |label: &str, now: &str, next: &str| {
        assert_eq!(tokens(&db, october), now, "{label}: October");
        assert_eq!(tokens(&db, november), next, "{label}: November");
    };
    for label in ["pending", "aggregated"] {
        check(
            label,
            "used 1200 remaining 100 exceeded false granted 300 grant_remaining 100",
            "used 0 remaining 1100 exceeded false granted 300 grant_remaining 100",
        );
        add_new_events_to_periods(&mut db.conn());
    }
    assert_eq!(draws(&db), format!("{id} 2026-10 200"));
    spend(&db, Some(7), &[(150, "2026-10-25T00:00:00Z")]);
    for label in ["pending", "aggregated"] {
        check(
            label,
            "used 1350 remaining 0 exceeded true granted 300 grant_remaining 0",
            "used 0 remaining 1000 exceeded false granted 300 grant_remaining 0",
        );
        add_new_events_to_periods(&mut db.conn());
    }
    assert_eq!(draws(&db), format!("{id} 2026-10 300"));
    // User 2's personal quota has no plan and no grant.
    assert_eq!(
        tokens(&db, "quota_status(2, '2026-10-20T00:00:00Z')"),
        "used 0 remaining  exceeded false granted 0 grant_remaining 0"
    );
}

#[test]
fn a_voided_grant_keeps_what_it_gave_and_gives_nothing_after_its_void() {
    let db = TestDb::new();
    seed(&db);
    // The month of the database's clock: 100 over at its start, before the void; 100 more in
    // its last second, after it. The voided grant expires first, so it is drawn first.
    let month = "date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'";
    let grant_sql = |amount: i64, years: i64| {
        db.count(&format!(
            "SELECT usage_grant(p_user_id => 1, p_metric => 'tokens', p_amount => {amount},
                                p_starts_at => {month},
                                p_expires_at => {month} + interval '{years} years') AS n"
        ))
    };
    let (voided, kept) = (grant_sql(500, 1), grant_sql(30, 2));
    db.execute(&format!(
        "INSERT INTO usage_events (user_id, kind, tokens, created_at)
         VALUES (1, 'ai_response', 1100, {month}),
                (1, 'ai_response', 100, {month} + interval '1 month' - interval '1 second')"
    ));
    add_new_events_to_periods(&mut db.conn());
    let given = "SELECT string_agg(format('%s %s', grant_id, drawn), ', ' ORDER BY grant_id) AS t
                   FROM usage_grant_draws";
    assert_eq!(text(&mut db.conn(), given), format!("{voided} 200"));
    db.execute(&format!("SELECT usage_void_grant({voided}, 'refund')"));
    add_new_events_to_periods(&mut db.conn());
    // 100 stay drawn; of the 100 after the void, 30 come from the other grant, 70 are over.
    assert_eq!(
        text(&mut db.conn(), given),
        format!("{voided} 100, {kept} 30")
    );
    assert_books_hold(&db, "after the void");
    assert_eq!(
        tokens(&db, "quota_status(1, now())"),
        "used 1200 remaining 0 exceeded true granted 30 grant_remaining 0"
    );
}
