//! Grants in the books (invariant 11): what `aggregate` records as drawn
//! (`usage_grant_draws`) is always what `usage_grant_ledger` gives over the counted events,
//! never past a grant's amount: after late events into a closed period, a rebuild, repeated
//! runs; and, for random events, grants, voids and interleaved runs, equal to an independent
//! simulation written here: each event's part past the plan's monthly limit drawn at its
//! instant from the grants active then, earliest expiry first.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};
use proptest::prelude::*;
use usage_worker::jobs::{JobKind, RunOpts};

use crate::grants::{assert_books_hold, draws, grant, seed, spend, tokens};
use crate::support::quota::add_new_events_to_periods;
use crate::support::{TestDb, text};

/// Runs the aggregate job at a fixed instant; the grant draw rows it changed.
fn aggregate_job(db: &TestDb, opts: &RunOpts) -> i64 {
    let report = db
        .run_job(JobKind::Aggregate, "2026-11-20T00:00:00Z", opts)
        .unwrap_or_else(|e| panic!("aggregate: {e}"));
    report.details["grant_draws_changed"].as_i64().unwrap_or(0)
}

fn reset_monthly(db: &TestDb, now: &str) {
    db.run_job(JobKind::ResetMonthly, now, &RunOpts::default())
        .unwrap_or_else(|e| panic!("reset-monthly at {now}: {e}"));
}

#[test]
fn late_events_a_rebuild_and_repeated_runs_keep_the_draws_the_ledgers() {
    // Alone: the job's runs count every committed event, none held back by other tests.
    let db = TestDb::alone();
    seed(&db);
    let who = "p_user_id => 1";
    let g1 = grant(
        &db,
        who,
        "tokens",
        600,
        ("2026-09-01T00:00:00Z", "2026-12-01T00:00:00Z"),
    );
    let g2 = grant(
        &db,
        who,
        "tokens",
        400,
        ("2026-09-15T00:00:00Z", "2026-11-01T00:00:00Z"),
    );
    // 200 over on September 5th: only grant 1 has started.
    spend(&db, None, &[(1200, "2026-09-05T00:00:00Z")]);
    aggregate_job(&db, &RunOpts::default());
    reset_monthly(&db, "2026-10-01T01:00:00Z");
    let closed = "SELECT count(*) AS n FROM usage_periods
                   WHERE period = 'month' AND status = 'closed' AND period_start = '2026-09-01'";
    assert_eq!(db.count(closed), 1, "September is closed");
    // 350 over on October 10th: grant 2 expires first.
    spend(&db, None, &[(1350, "2026-10-10T00:00:00Z")]);
    aggregate_job(&db, &RunOpts::default());
    assert_eq!(draws(&db), format!("{g1} 2026-09 200, {g2} 2026-10 350"));
    assert_books_hold(&db, "before the late event");
    // A late event in closed September, after grant 2 started: it takes 100 of grant 2,
    // which then has 300 for October, whose last 50 come from grant 1.
    db.execute(
        "SELECT usage_record(p_user_id => 1, p_kind => 'ai_response', p_tokens => 100,
                            p_created_at => '2026-09-20T00:00:00Z')",
    );
    assert!(aggregate_job(&db, &RunOpts::default()) > 0);
    let settled = format!("{g1} 2026-09 200, {g1} 2026-10 50, {g2} 2026-09 100, {g2} 2026-10 300");
    assert_eq!(draws(&db), settled);
    assert_books_hold(&db, "after the late event");
    let stamps = "SELECT string_agg(recorded_at::text, ',' ORDER BY grant_id, period_start) AS t
                    FROM usage_grant_draws";
    let recorded = text(&mut db.conn(), stamps);
    for run in 0..2 {
        assert_eq!(aggregate_job(&db, &RunOpts::default()), 0, "run {run}");
        assert_eq!(
            text(&mut db.conn(), stamps),
            recorded,
            "run {run} rewrote draws"
        );
    }
    // Draws changed by hand: the rebuild records what the ledger gives again.
    db.execute(&format!(
        "UPDATE usage_grant_draws SET drawn = drawn + 7 WHERE grant_id = {g1};
         DELETE FROM usage_grant_draws WHERE grant_id = {g2} AND period_start = '2026-09-01'"
    ));
    let rebuild = RunOpts {
        from: Some("2026-09-01".parse().unwrap()),
        to: Some("2026-10-31".parse().unwrap()),
        ..RunOpts::default()
    };
    aggregate_job(&db, &rebuild);
    assert_eq!(draws(&db), settled, "after the rebuild");
    assert_books_hold(&db, "after the rebuild");
    reset_monthly(&db, "2026-11-01T01:00:00Z");
    aggregate_job(&db, &RunOpts::default());
    assert_eq!(draws(&db), settled, "after October closed");
    assert_books_hold(&db, "after October closed");
}

/// The instants of the property: six-hour steps from 2026-09-01 (UTC), so that events,
/// grants' starts, expiries and voids and month ends often fall on one instant.
fn instant(step: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 9, 1, 0, 0, 0).unwrap() + Duration::hours(6 * step)
}

/// September to November 2026.
const STEPS: i64 = 91 * 4;

#[derive(Debug, Clone)]
struct GrantCase {
    amount: i64,
    start: i64,
    length: i64,
    /// When it is voided, relative to its start (before it, during it or after it expired).
    void: Option<i64>,
    /// Before which batch of events it is made (0, 1 or 2).
    made: usize,
    /// How many batches later it is voided (the last batch at the latest).
    voided_later: usize,
}

#[derive(Debug, Clone)]
struct Case {
    limit: i64,
    /// (tokens, step), in the order they are inserted: three batches of a third each.
    events: Vec<(i64, i64)>,
    grants: Vec<GrantCase>,
    /// Whether `aggregate` runs after each batch (it always runs at the end).
    aggregate_after: [bool; 3],
    /// Whether reset-monthly closes September and October after the first batch.
    close_after_first: bool,
    /// The step at which quota_status() is asked (up to a month past November).
    ask: i64,
}

fn grant_case() -> impl Strategy<Value = GrantCase> {
    (
        1i64..700,
        -20i64..STEPS,
        1i64..240,
        prop::option::of(-8i64..250),
        0usize..3,
        0usize..3,
    )
        .prop_map(
            |(amount, start, length, void, made, voided_later)| GrantCase {
                amount,
                start,
                length,
                void,
                made,
                voided_later,
            },
        )
}

fn case() -> impl Strategy<Value = Case> {
    (
        100i64..1500,
        prop::collection::vec((0i64..400, 0i64..STEPS), 3..40),
        prop::collection::vec(grant_case(), 1..5),
        prop::array::uniform3(any::<bool>()),
        any::<bool>(),
        0i64..STEPS + 120,
    )
        .prop_map(
            |(limit, events, grants, aggregate_after, close_after_first, ask)| Case {
                limit,
                events,
                grants,
                aggregate_after,
                close_after_first,
                ask,
            },
        )
}

/// What each grant gave per (grant id, (year, month)).
type Drawn = BTreeMap<(i64, (i32, u32)), i64>;

/// A grant as the simulation sees it.
struct Sim {
    id: i64,
    amount: i64,
    start: DateTime<Utc>,
    expires: DateTime<Utc>,
    /// The earlier of its expiry and its void.
    end: DateTime<Utc>,
}

/// The draws per (grant, month), simulated: events in time order (ties in insertion order),
/// each month's cumulative usage, every unit past `limit` drawn at its instant from the grants
/// active then with something left, earliest expiry first, then the lower id.
fn simulate(limit: i64, events: &[(i64, i64)], grants: &[Sim]) -> Drawn {
    let mut order: Vec<usize> = (0..events.len()).collect();
    order.sort_by_key(|&i| (events[i].1, i));
    let mut by_expiry: Vec<&Sim> = grants.iter().collect();
    by_expiry.sort_by_key(|g| (g.expires, g.id));
    let mut left: BTreeMap<i64, i64> = grants.iter().map(|g| (g.id, g.amount)).collect();
    let mut used: BTreeMap<(i32, u32), i64> = BTreeMap::new();
    let mut drawn = BTreeMap::new();
    for i in order {
        let (tokens, step) = events[i];
        let at = instant(step);
        let month = (at.year(), at.month());
        let before = *used.get(&month).unwrap_or(&0);
        used.insert(month, before + tokens);
        let mut over = (before + tokens - limit).max(0) - (before - limit).max(0);
        for g in &by_expiry {
            let rest = left.get_mut(&g.id).unwrap();
            if over == 0 || !(g.start <= at && at < g.end) || *rest == 0 {
                continue;
            }
            let take = over.min(*rest);
            *rest -= take;
            over -= take;
            *drawn.entry((g.id, month)).or_insert(0) += take;
        }
    }
    drawn
}

/// What quota_status() must say of monthly tokens at `case.ask`, from the simulation: the
/// grants active then, what they have left after the months up to that one, the plan's rest.
fn expected_status(case: &Case, sims: &[Sim], drawn: &Drawn) -> String {
    let at = instant(case.ask);
    let month = (at.year(), at.month());
    let used: i64 = (case.events.iter())
        .filter(|(_, step)| (instant(*step).year(), instant(*step).month()) == month)
        .map(|(tokens, _)| tokens)
        .sum();
    let active: Vec<&Sim> = sims
        .iter()
        .filter(|g| g.start <= at && at < g.end)
        .collect();
    let granted: i64 = active.iter().map(|g| g.amount).sum();
    // What the active grants have left after every event, later ones included.
    let balance: i64 = (active.iter())
        .map(|g| {
            let gave: i64 = (drawn.iter())
                .filter(|((id, _), _)| *id == g.id)
                .map(|(_, n)| n)
                .sum();
            g.amount - gave
        })
        .sum();
    let remaining = (case.limit - used).max(0) + balance;
    let exceeded = used >= case.limit && balance <= 0;
    format!(
        "used {used} remaining {remaining} exceeded {exceeded} granted {granted} \
         grant_remaining {balance}"
    )
}

fn listed(drawn: &Drawn) -> String {
    let rows: Vec<String> = drawn
        .iter()
        .map(|((id, (y, m)), n)| format!("{id} {y}-{m:02} {n}"))
        .collect();
    rows.join(", ")
}

/// Makes the grants of batch `batch`, then voids those voided in it (at their chosen instant,
/// as usage_void_grant() does at now()), keeping them as the simulation sees them in `sims`
/// (in the order of `case.grants`).
fn grants_of_batch(db: &TestDb, case: &Case, batch: usize, sims: &mut BTreeMap<usize, Sim>) {
    for (n, g) in case
        .grants
        .iter()
        .enumerate()
        .filter(|(_, g)| g.made == batch)
    {
        let (start, expires) = (instant(g.start), instant(g.start + g.length));
        let span = (start.to_rfc3339(), expires.to_rfc3339());
        let id = grant(db, "p_user_id => 1", "tokens", g.amount, (&span.0, &span.1));
        let (amount, end) = (g.amount, expires);
        sims.insert(
            n,
            Sim {
                id,
                amount,
                start,
                expires,
                end,
            },
        );
    }
    for (n, g) in case.grants.iter().enumerate() {
        let Some(void) = g.void.filter(|_| (g.made + g.voided_later).min(2) == batch) else {
            continue;
        };
        let voided_at = instant(g.start + void);
        let sim = sims.get_mut(&n).expect("made before it is voided");
        db.execute(&format!(
            "UPDATE usage_grants SET voided_at = '{}', voided_by = 'test', settled = false
              WHERE id = {}",
            voided_at.to_rfc3339(),
            sim.id
        ));
        sim.end = sim.expires.min(voided_at);
    }
}

/// Periods whose totals differ from their raw events, or whose draws exceed their usage past
/// the limit (what the plan gave, used less drawn, is below the limit).
fn periods_out_of_balance(db: &TestDb, limit: i64) -> i64 {
    db.count(&format!(
        "SELECT count(*) AS n FROM usage_periods p
          CROSS JOIN LATERAL (SELECT COALESCE(sum(e.tokens), 0) AS raw FROM usage_events e
                               WHERE e.user_id = 1 AND e.org_id IS NULL
                                 AND e.created_at >= p.period_start AND e.created_at < p.period_end) r
          CROSS JOIN LATERAL (SELECT COALESCE(sum(d.drawn), 0) AS drawn FROM usage_grant_draws d
                               WHERE d.period_start = p.period_start) d
          WHERE p.user_id = 1 AND p.org_id = 0 AND p.period = 'month'
            AND (p.tokens <> r.raw OR p.tokens - d.drawn < LEAST(r.raw, {limit}))"
    ))
}

fn draws_equal_the_simulation(case: Case) {
    let db = TestDb::new();
    seed(&db);
    db.execute(&format!(
        "UPDATE plan_limits SET max_value = {}",
        case.limit
    ));
    let mut sims = BTreeMap::new();
    let third = case.events.len().div_ceil(3);
    for batch in 0..3 {
        grants_of_batch(&db, &case, batch, &mut sims);
        let rows: Vec<(i64, String)> = (case.events.iter().skip(batch * third).take(third))
            .map(|(tokens, step)| (*tokens, instant(*step).to_rfc3339()))
            .collect();
        let rows: Vec<(i64, &str)> = rows.iter().map(|(t, at)| (*t, at.as_str())).collect();
        if !rows.is_empty() {
            spend(&db, None, &rows);
        }
        if case.aggregate_after[batch] {
            add_new_events_to_periods(&mut db.conn());
        }
        if batch == 0 && case.close_after_first {
            add_new_events_to_periods(&mut db.conn());
            reset_monthly(&db, "2026-11-01T01:00:00Z");
        }
    }
    let sims: Vec<Sim> = sims.into_values().collect();
    let simulated = simulate(case.limit, &case.events, &sims);
    let status = expected_status(&case, &sims, &simulated);
    let call = format!("quota_status(1, '{}')", instant(case.ask).to_rfc3339());
    for aggregated in [false, true] {
        if aggregated {
            add_new_events_to_periods(&mut db.conn());
        }
        assert_eq!(
            tokens(&db, &call),
            status,
            "{call}, aggregated {aggregated}: {case:?}"
        );
    }
    assert_eq!(draws(&db), listed(&simulated), "{case:?}");
    assert_books_hold(&db, &format!("{case:?}"));
    assert_eq!(periods_out_of_balance(&db, case.limit), 0, "{case:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random events over three months, grants (some voided, before, during or after their
    /// life), runs of aggregate between batches and a month-end close: the recorded draws are
    /// the simulation's, no grant gives past its amount, every period's usage is the plan's
    /// (up to the limit), the grants' or over the limit, and equals its raw events.
    #[test]
    fn recorded_draws_equal_an_independent_simulation(case in case()) {
        draws_equal_the_simulation(case);
    }
}
