//! Answers that are never late: `quota_status()`, `org_quota_status()`, the summaries and
//! `org_usage_by_member()` count every event the caller's snapshot sees, whether `aggregate`
//! has counted it or not, each once: also while `aggregate` commits, a reset closes periods
//! and a transaction elsewhere holds the watermark back, which the run then names.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Timestamptz};
use proptest::prelude::*;
use usage_worker::jobs::aggregate::{self, Limit};
use usage_worker::jobs::{JobKind, RunOpts};
use usage_worker::subject::Subject;

use crate::support::quota::add_new_events_to_periods;
use crate::support::roles::RolesDb;
use crate::support::{self, TestDb, count};

/// User 1 (UTC) and organization 7 (UTC, user 2 its member) on a plan with soft token limits,
/// so that every answer has rows.
const SEED_SQL: &str = "INSERT INTO plans (id, name) VALUES (1, 'team');
         INSERT INTO plan_limits (plan_id, metric, period, kind, max_value)
         VALUES (1, 'tokens', 'day', '', 1000000), (1, 'tokens', 'month', '', 10000000);
         INSERT INTO users (id, email, plan_id) VALUES (1, 'ada@example.com', 1),
                                                  (2, 'bob@example.com', NULL);
         INSERT INTO organizations (id, name, plan_id) VALUES (7, 'Acme', 1);
         INSERT INTO organization_members (org_id, user_id, role) VALUES (7, 2, 'owner');";

fn seed(db: &TestDb) {
    db.execute(SEED_SQL);
}

const SUBJECTS: [Subject; 2] = [Subject::User(1), Subject::Org(7)];

/// Records `tokens` for `subject` at `created_at` through usage_record.
fn record(conn: &mut PgConnection, subject: Subject, tokens: i64, created_at: &str) {
    let who = match subject {
        Subject::User(id) => format!("p_user_id => {id}"),
        Subject::Org(id) => format!("p_user_id => 2, p_org_id => {id}"),
    };
    conn.batch_execute(&format!(
        "SELECT usage_record({who}, p_kind => 'ai_response', p_tokens => {tokens},
                            p_created_at => '{created_at}')"
    ))
    .unwrap_or_else(|e| panic!("record for {subject}: {e}"));
}

/// (requests, tokens) the status function of `subject` gives for `period` at `at`.
fn status(conn: &mut PgConnection, subject: Subject, period: &str, at: &str) -> (i64, i64) {
    let call = match subject {
        Subject::User(id) => format!("quota_status({id}, '{at}')"),
        Subject::Org(id) => format!("org_quota_status({id}, '{at}')"),
    };
    let mut used = |metric: &str| {
        count(
            conn,
            &format!(
                "SELECT used::bigint AS n FROM {call}
                  WHERE metric = '{metric}' AND period = '{period}' AND kind = ''"
            ),
        )
        .unwrap_or_else(|e| panic!("{call}: {e}"))
    };
    (used("requests"), used("tokens"))
}

/// The tokens the daily summary function of `subject` gives for 2026-11-10.
fn summary_tokens(conn: &mut PgConnection, subject: Subject) -> i64 {
    let call = match subject {
        Subject::User(id) => format!("usage_summary({id}, 'day', '2026-11-10', '2026-11-10')"),
        Subject::Org(id) => format!("org_usage_summary({id}, 'day', '2026-11-10', '2026-11-10')"),
    };
    count(
        conn,
        &format!("SELECT COALESCE(sum(tokens), 0)::bigint AS n FROM {call}"),
    )
    .unwrap()
}

#[test]
fn every_answer_counts_events_before_aggregate_adds_them_and_each_once_after() {
    let db = TestDb::new();
    seed(&db);
    let mut conn = db.conn();
    let noon = "2026-11-10T12:00:00Z";
    for subject in SUBJECTS {
        for _ in 0..7 {
            record(&mut conn, subject, 10, "2026-11-10T10:00:00Z");
        }
        assert_eq!(
            status(&mut conn, subject, "day", noon),
            (7, 70),
            "{subject}"
        );
        assert_eq!(
            status(&mut conn, subject, "month", noon),
            (7, 70),
            "{subject}"
        );
        assert_eq!(summary_tokens(&mut conn, subject), 70, "{subject}");
    }
    let by_member = "SELECT tokens AS n FROM org_usage_by_member(7, '2026-11-01', '2026-11-30')
                      WHERE user_id = 2";
    assert_eq!(count(&mut conn, by_member).unwrap(), 70);

    add_new_events_to_periods(&mut conn);
    for subject in SUBJECTS {
        assert_eq!(
            status(&mut conn, subject, "day", noon),
            (7, 70),
            "{subject} aggregated"
        );
        assert_eq!(
            summary_tokens(&mut conn, subject),
            70,
            "{subject} aggregated"
        );
        for _ in 0..3 {
            record(&mut conn, subject, 10, "2026-11-10T11:00:00Z");
        }
        assert_eq!(
            status(&mut conn, subject, "day", noon),
            (10, 100),
            "{subject} both"
        );
        assert_eq!(
            status(&mut conn, subject, "month", noon),
            (10, 100),
            "{subject} both"
        );
        assert_eq!(summary_tokens(&mut conn, subject), 100, "{subject} both");
    }
    assert_eq!(count(&mut conn, by_member).unwrap(), 100);
}

#[test]
fn a_transaction_left_open_holds_aggregation_back_but_not_the_answers_and_the_run_names_it() {
    let db = TestDb::alone();
    seed(&db);
    let mut holder = db.conn();
    holder
        .batch_execute(
            "SET application_name = 'forgotten-tx';
             BEGIN;
             SELECT pg_current_xact_id();",
        )
        .unwrap();
    let holder_pid = count(&mut holder, "SELECT pg_backend_pid()::bigint AS n").unwrap();
    let mut conn = db.conn();
    for _ in 0..30 {
        record(&mut conn, Subject::User(1), 1, "2026-11-10T10:00:00Z");
    }
    std::thread::sleep(Duration::from_millis(2500));

    let report = db
        .run_job(
            JobKind::Aggregate,
            "2026-11-10T12:00:00Z",
            &RunOpts::default(),
        )
        .unwrap();
    assert_eq!(report.details["events"], 0, "{}", report.summary);
    assert_eq!(report.details["held_back_by"]["pid"], holder_pid);
    assert_eq!(
        report.details["held_back_by"]["application_name"],
        "forgotten-tx"
    );
    assert_eq!(
        report.details["held_back_by"]["state"],
        "idle in transaction"
    );
    assert!(
        report.summary.contains("held back by pid"),
        "{}",
        report.summary
    );
    // The answers do not wait.
    let noon = "2026-11-10T12:00:00Z";
    assert_eq!(status(&mut conn, Subject::User(1), "day", noon), (30, 30));

    // Through the binary: a warning past aggregate.stall_warning, and --status shows it.
    let out = support::output({
        let mut command = db.binary();
        command
            .env("USAGE_WORKER__AGGREGATE__STALL_WARNING", "1s")
            .args(["--run", "aggregate"]);
        command
    });
    assert_eq!(out.code, 0, "{}", out.stderr);
    let warning = out
        .stderr
        .lines()
        .find(|l| l.contains("WARN") && l.contains("held back"))
        .unwrap_or_else(|| panic!("no warning naming the holder:\n{}", out.stderr));
    assert!(warning.contains("forgotten-tx"), "{warning}");
    let status_out = support::stdout_of_success(db.binary().arg("--status"));
    assert!(
        status_out.contains(&format!("held back by pid {holder_pid}")),
        "{status_out}"
    );
    // And /metrics: a gauge of how long it has been open, labelled with the session.
    let sample = usage_worker::metrics::sample_database(&mut conn).unwrap();
    let exposition = usage_worker::metrics::Metrics::new().render(Some(&sample), true, None);
    let gauge = exposition
        .lines()
        .find(|l| l.starts_with("usage_worker_watermark_held_back_seconds{"))
        .unwrap_or_else(|| panic!("{exposition}"));
    assert!(
        gauge.contains(&format!("pid=\"{holder_pid}\""))
            && gauge.contains("application_name=\"forgotten-tx\""),
        "{gauge}"
    );

    drop(holder);
    let report = db
        .run_job(
            JobKind::Aggregate,
            "2026-11-10T12:00:00Z",
            &RunOpts::default(),
        )
        .unwrap();
    assert_eq!(report.details["events"], 30);
    assert!(report.details.get("held_back_by").is_none());
    assert_eq!(status(&mut conn, Subject::User(1), "day", noon), (30, 30));
}

/// In one snapshot (REPEATABLE READ), for each subject and period of `at`: what the status
/// functions say and the raw events of that period; returns the differences.
fn compare_in_one_snapshot(conn: &mut PgConnection, at_text: &str) -> Vec<String> {
    #[derive(QueryableByName)]
    struct Bounds {
        #[diesel(sql_type = Timestamptz)]
        period_start: chrono::DateTime<chrono::Utc>,
        #[diesel(sql_type = Timestamptz)]
        period_end: chrono::DateTime<chrono::Utc>,
        #[diesel(sql_type = BigInt)]
        used: i64,
    }
    let mut differences = Vec::new();
    conn.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .unwrap();
    for subject in SUBJECTS {
        let (user_id, org_id) = subject.key();
        for period in ["day", "month"] {
            let b: Bounds = diesel::sql_query(format!(
                "SELECT period_start, period_end, used::bigint AS used
                   FROM usage_subject_status({user_id}, {org_id}, '{at_text}')
                  WHERE metric = 'tokens' AND period = '{period}' AND kind = ''"
            ))
            .get_result(conn)
            .unwrap();
            let raw = count(
                conn,
                &format!(
                    "SELECT COALESCE(sum(e.tokens), 0)::bigint AS n FROM usage_events e
                      CROSS JOIN LATERAL usage_event_subject(e.user_id, e.org_id) s
                      WHERE s.user_id = {user_id} AND s.org_id = {org_id}
                        AND e.created_at >= '{}' AND e.created_at < '{}'",
                    b.period_start.to_rfc3339(),
                    b.period_end.to_rfc3339()
                ),
            )
            .unwrap();
            if raw != b.used {
                differences.push(format!(
                    "{subject} {period} at {at_text}: {} vs raw {raw}",
                    b.used
                ));
            }
        }
    }
    conn.batch_execute("COMMIT").unwrap();
    differences
}

/// Two days of one month; the reset closes the first day's periods at 00:30 on the second.
const DAYS: [&str; 2] = ["2026-11-01T10:00:00Z", "2026-11-02T10:00:00Z"];
const NOONS: [&str; 2] = ["2026-11-01T12:00:00Z", "2026-11-02T12:00:00Z"];

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, ..ProptestConfig::default() })]

    /// Recorders, `aggregate` in small batches and a reset run at once; a checker compares the
    /// answers with the raw events in one snapshot all along, and at the end.
    #[test]
    fn answers_equal_the_raw_sums_while_recorders_aggregate_and_a_reset_interleave(
        events in prop::collection::vec((0usize..2, 1i64..1000, 0usize..2), 20..80),
    ) {
        let db = TestDb::new();
        seed(&db);
        let stop = Arc::new(AtomicBool::new(false));
        let differences = Arc::new(Mutex::new(Vec::new()));
        let checker = {
            let (mut conn, stop, differences) = (db.conn(), stop.clone(), differences.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for noon in NOONS {
                        differences.lock().unwrap().extend(compare_in_one_snapshot(&mut conn, noon));
                    }
                }
            })
        };
        let aggregator = {
            let (mut conn, stop) = (db.conn(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    aggregate::transaction(&mut conn, 7, Limit::Horizon { also_below: None }).unwrap();
                }
            })
        };
        let half = events.len() / 2;
        let recorders: Vec<_> = [events[..half].to_vec(), events[half..].to_vec()]
            .into_iter()
            .map(|share| {
                let mut conn = db.conn();
                std::thread::spawn(move || {
                    for (who, tokens, day) in share {
                        record(&mut conn, SUBJECTS[who], tokens, DAYS[day]);
                    }
                })
            })
            .collect();
        let reset = db.run_job(JobKind::ResetDaily, "2026-11-02T00:30:00Z", &RunOpts::default());
        for recorder in recorders {
            recorder.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        aggregator.join().unwrap();
        checker.join().unwrap();
        reset.unwrap();
        let mut conn = db.conn();
        add_new_events_to_periods(&mut conn);
        db.run_job(JobKind::ResetDaily, "2026-11-02T00:30:00Z", &RunOpts::default()).unwrap();
        let mut all = differences.lock().unwrap().clone();
        for noon in NOONS {
            all.extend(compare_in_one_snapshot(&mut conn, noon));
        }
        prop_assert!(all.is_empty(), "{all:?}");
    }
}

/// Rows the scans of `usage_events` partitions in an `EXPLAIN (ANALYZE, FORMAT JSON)` plan
/// read: returned, and removed by a filter or a recheck.
fn event_rows_read(node: &serde_json::Value) -> f64 {
    let number = |key: &str| {
        node.get(key)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0)
    };
    let own = match node
        .get("Relation Name")
        .and_then(serde_json::Value::as_str)
    {
        Some(name) if name.starts_with("usage_events") => {
            number("Actual Rows") * number("Actual Loops")
                + number("Rows Removed by Filter")
                + number("Rows Removed by Index Recheck")
        }
        _ => 0.0,
    };
    let children = node
        .get("Plans")
        .and_then(serde_json::Value::as_array)
        .map_or(0.0, |plans| plans.iter().map(event_rows_read).sum());
    own + children
}

/// Through `conn` (search_path on the worker's schema, rights to write): 2,000 events of each
/// subject earlier in the month, counted by aggregate, in the month's own partition, beside
/// those of 500 other users; then 3 events of each subject, and of organization 8, not yet
/// counted.
fn load_history_and_pending(conn: &mut PgConnection) {
    conn.batch_execute(
        "SELECT usage_create_partition('2026-11-01');
         INSERT INTO usage_events (user_id, org_id, kind, tokens, created_at)
         SELECT s.user_id, s.org_id, 'ai_response', 1,
                '2026-11-02T00:00:00Z'::timestamptz + make_interval(mins => g)
           FROM (VALUES (1, NULL::bigint), (2, 7)) AS s (user_id, org_id),
                generate_series(1, 2000) AS g;
         INSERT INTO usage_events (user_id, kind, tokens, created_at)
         SELECT 100 + g % 500, 'ai_response', 1,
                '2026-11-03T00:00:00Z'::timestamptz + make_interval(mins => g)
           FROM generate_series(1, 5000) AS g",
    )
    .unwrap();
    add_new_events_to_periods(conn);
    for subject in SUBJECTS {
        for _ in 0..3 {
            record(conn, subject, 10, "2026-11-10T11:00:00Z");
        }
    }
    // Another organization's events not yet counted: an index that tells organizations
    // apart by its first key alone would read them too.
    conn.batch_execute(
        "INSERT INTO organizations (id, name, plan_id) VALUES (8, 'Globex', 1);
         INSERT INTO usage_events (user_id, org_id, kind, tokens, created_at)
         SELECT 2, 8, 'ai_response', 10, '2026-11-10T11:00:00Z' FROM generate_series(1, 3);
         ANALYZE usage_events",
    )
    .unwrap();
}

/// In `conn`'s session (`who`), with the plan a session's answers use after a few calls
/// (generic, the subject and the period as parameters): each subject's scan for its pending
/// events reads those 3 and no other row, and its month counts all 2,003.
fn assert_the_pending_scan_reads_the_pending_events_only(conn: &mut PgConnection, who: &str) {
    conn.batch_execute(
        "SET plan_cache_mode = force_generic_plan;
         PREPARE pending (bigint, bigint, timestamptz, timestamptz) AS
             SELECT count(*) FROM usage_subject_pending($1, $2, $3, $4);
         CREATE FUNCTION pg_temp.plan_of(q text) RETURNS text LANGUAGE plpgsql AS $$
         DECLARE v json; BEGIN EXECUTE q INTO v; RETURN v::text; END $$;",
    )
    .unwrap_or_else(|e| panic!("{who}: {e}"));
    for (subject, (user_id, org_id)) in SUBJECTS.into_iter().zip([(1, 0), (0, 7)]) {
        let execute = format!(
            "EXECUTE pending({user_id}, {org_id}, '2026-11-01T00:00:00Z', '2026-12-01T00:00:00Z')"
        );
        let plan = support::text(
            conn,
            &format!("SELECT pg_temp.plan_of($q$EXPLAIN (ANALYZE, FORMAT JSON) {execute}$q$) AS t"),
        );
        let plan: serde_json::Value = serde_json::from_str(&plan).unwrap();
        let read = event_rows_read(&plan[0]["Plan"]);
        assert!(
            read <= 3.0,
            "{who}, {subject}: the pending scan read {read} event rows for 3 pending events: {plan}"
        );
        assert_eq!(
            status(conn, subject, "month", "2026-11-10T12:00:00Z"),
            (2003, 2030),
            "{who}, {subject}"
        );
    }
}

#[test]
fn the_answers_read_a_subjects_pending_events_not_what_it_recorded_before() {
    let db = TestDb::new();
    seed(&db);
    let mut conn = db.conn();
    load_history_and_pending(&mut conn);
    assert_the_pending_scan_reads_the_pending_events_only(&mut conn, "the worker's session");
}

/// The application's role is under row-level security: PostgreSQL then uses a condition as an
/// index condition only if it cannot leak rows, so the subject key must be written with what
/// it knows to be safe.
#[test]
fn under_row_level_security_the_application_reads_a_subjects_pending_events_only() {
    let roles = RolesDb::new("pending_rls", "usage");
    roles.migrate_as_owner();
    let mut admin = roles.admin();
    admin.batch_execute("SET search_path = usage").unwrap();
    admin.batch_execute(SEED_SQL).unwrap();
    load_history_and_pending(&mut admin);
    let mut app = usage_worker::db::connect(&roles.url_as(&roles.writer)).expect("connect");
    app.batch_execute("SET search_path = usage").unwrap();
    assert_the_pending_scan_reads_the_pending_events_only(&mut app, "the application's role");
}
