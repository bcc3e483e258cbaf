//! Manual resets (`--run reset-daily --user N` / `--org N`): the subject's current period is
//! split at the reset instant, events land on their side of it, the same reset again changes
//! nothing, and the next rollover goes on from the new period.

use usage_worker::jobs::{JobKind, RunOpts};
use usage_worker::subject::Subject;

use crate::support::quota::{
    PeriodRow, add_new_events_to_periods, assert_tiled_and_exact, event, open_period, periods,
    spend,
};
use crate::support::{self, TestDb, at};

/// The options of a run limited to `subject`.
fn only(subject: Subject) -> RunOpts {
    RunOpts {
        user_id: subject.user_id(),
        org_id: subject.org_id(),
        ..RunOpts::default()
    }
}

/// The flag and id that name `subject` on the command line.
fn flag(subject: Subject) -> [String; 2] {
    let (key, id) = subject.report_key();
    let flag = if key == "user_id" { "--user" } else { "--org" };
    [flag.to_string(), id.to_string()]
}

/// `--run reset-daily` of `subject` at `now`, with `extra` arguments.
fn manual_reset(db: &TestDb, subject: Subject, now: &str, extra: &[&str]) -> String {
    support::stdout_of_success(
        db.binary()
            .args(["--run", "reset-daily"])
            .args(flag(subject))
            .args(["--at", now, "--allow-future"])
            .args(extra),
    )
}

type Shape<'a> = (String, String, &'a str, Option<&'a str>, i64);

fn shape(rows: &[PeriodRow]) -> Vec<Shape<'_>> {
    rows.iter()
        .map(|p| {
            (
                p.period_start.to_rfc3339(),
                p.period_end.to_rfc3339(),
                p.status.as_str(),
                p.close_reason.as_deref(),
                p.tokens,
            )
        })
        .collect()
}

/// A day period from `start` to `end` (`01-10T08`: 2027-01-10 08:00Z) as [`shape`] gives it.
fn day<'a>(
    start: &str,
    end: &str,
    status: &'a str,
    reason: Option<&'a str>,
    tokens: i64,
) -> Shape<'a> {
    let instant = |t: &str| format!("2027-{t}:00:00+00:00");
    (instant(start), instant(end), status, reason, tokens)
}

/// A manual reset of one subject does not stand in for the rollover of everyone.
fn rollover_done(db: &TestDb) -> bool {
    usage_worker::ledger::succeeded_since(
        &mut db.conn(),
        JobKind::ResetDaily,
        at("2020-01-01T00:00:00Z"),
    )
    .unwrap()
}

#[test]
fn a_manual_reset_splits_the_subjects_day_and_events_land_on_their_side_of_it() {
    // User 42 or organization 2 (members 1 and 2), in Los Angeles: the day of 2027-01-10 runs
    // from 08:00Z to 2027-01-11 08:00Z.
    for subject in [Subject::User(42), Subject::Org(2)] {
        let db = TestDb::new();
        db.add_user(1, "Europe/Berlin");
        db.add_user(2, "America/New_York");
        db.add_subject(subject, "America/Los_Angeles", None, None);
        if let Subject::Org(org) = subject {
            db.add_member(org, 2, "owner");
            db.add_member(org, 1, "member");
            event(&db, 1, None, "ai_response", 4, "2027-01-10T18:30:00Z");
            event(&db, 2, None, "ai_response", 6, "2027-01-10T19:00:00Z");
        }
        spend(&db, subject, 2, "ai_response", 10, "2027-01-10T09:00:00Z");
        spend(&db, subject, 2, "ai_response", 20, "2027-01-10T18:00:00Z");
        add_new_events_to_periods(&mut db.conn());
        open_period(&db, subject, "day", "2027-01-10T18:00:00Z");

        reset_at_20_and_again(&db, subject);

        spend(&db, subject, 1, "ai_response", 40, "2027-01-10T21:00:00Z");
        spend(&db, subject, 2, "ai_response", 80, "2027-01-11T07:00:00Z");
        // Arrives late: belongs to the period closed by the manual reset.
        spend(&db, subject, 1, "ai_response", 1, "2027-01-10T19:30:00Z");
        add_new_events_to_periods(&mut db.conn());
        rollover_at_8(&db, subject);
        spend(&db, subject, 1, "ai_response", 5, "2027-01-11T09:00:00Z");
        add_new_events_to_periods(&mut db.conn());

        let days = assert_tiled_and_exact(&db, subject, "day");
        assert_eq!(
            shape(&days),
            vec![
                day("01-10T08", "01-10T20", "closed", Some("manual"), 31),
                day("01-10T20", "01-11T08", "closed", Some("rollover"), 120),
                day("01-11T08", "01-12T08", "open", None, 5),
            ],
            "{subject}"
        );
        if let Subject::Org(_) = subject {
            // The members' personal days hold their personal events only.
            let closed = |user| {
                let rows = periods(&mut db.conn(), Subject::User(user), "day");
                let closed = rows.iter().filter(|p| p.status == "closed");
                closed.map(|p| (p.requests, p.tokens)).collect::<Vec<_>>()
            };
            assert_eq!(closed(1), vec![(1, 4)]);
            assert_eq!(closed(2), vec![(1, 6)]);
        }
    }
}

/// The rollover of everyone at 2027-01-11 08:00Z, through the binary: it closes the subject's
/// new day (and, with an organization, its members' personal days).
fn rollover_at_8(db: &TestDb, subject: Subject) {
    let rollover = support::stdout_of_success(db.binary().args([
        "--run",
        "reset-daily",
        "--at",
        "2027-01-11T08:00:00Z",
        "--allow-future",
    ]));
    let closed = match subject {
        Subject::User(_) => "closed 1 day period(s) ending",
        Subject::Org(_) => "(1 of organizations)",
    };
    assert!(rollover.contains(closed), "{rollover}");
    assert!(rollover_done(db));
}

/// Previews, then makes, a manual reset of `subject`'s day at 20:00Z through the binary, as an
/// operator would, so the run ledger records it; the same reset again changes nothing.
fn reset_at_20_and_again(db: &TestDb, subject: Subject) {
    let now = "2027-01-10T20:00:00Z";
    let preview = manual_reset(db, subject, now, &["--dry-run"]);
    assert!(
        preview.contains(&format!("would close {subject}'s day period"))
            && preview.contains(&format!(
                "{subject} day 2027-01-10 08:00:00Z to 2027-01-10 20:00:00Z: would close (manual)"
            )),
        "{preview}"
    );
    assert_eq!(
        shape(&periods(&mut db.conn(), subject, "day")),
        vec![day("01-10T08", "01-11T08", "open", None, 30)]
    );

    let out = manual_reset(db, subject, now, &[]);
    assert!(
        out.contains(&format!("closed {subject}'s day period")),
        "{out}"
    );
    let (key, id) = subject.report_key();
    let user_id = subject
        .user_id()
        .map_or("IS NULL".to_string(), |u| format!("= {u}"));
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) AS n FROM job_runs
              WHERE job = 'reset-daily' AND trigger = 'manual' AND status = 'succeeded'
                AND user_id {user_id} AND report->'details'->>'{key}' = '{id}'"
        )),
        1,
        "{subject}"
    );
    assert!(!rollover_done(db), "{subject}");
    let split = periods(&mut db.conn(), subject, "day");
    assert_eq!(
        shape(&split),
        vec![
            day("01-10T08", "01-10T20", "closed", Some("manual"), 30),
            day("01-10T20", "01-11T08", "open", None, 0),
        ]
    );
    assert_eq!((split[0].requests, split[0].tokens), (2, 30));

    let report = db
        .run_job(JobKind::ResetDaily, now, &only(subject))
        .unwrap();
    assert_eq!(report.details["reset"], false, "{report:?}");
    assert_eq!(periods(&mut db.conn(), subject, "day"), split);
}

#[test]
fn manual_reset_moves_events_counted_after_the_reset_instant_into_the_new_period() {
    let db = TestDb::new();
    db.add_user(7, "Europe/Berlin");
    event(&db, 7, None, "ai_response", 10, "2027-01-10T08:00:00Z");
    event(&db, 7, None, "image_generation", 20, "2027-01-10T15:00:00Z");
    add_new_events_to_periods(&mut db.conn());
    let report = db
        .run_job(
            JobKind::ResetMonthly,
            "2027-01-10T12:00:00Z",
            &only(Subject::User(7)),
        )
        .unwrap();
    assert_eq!(report.details["reset"], true);

    let months = assert_tiled_and_exact(&db, Subject::User(7), "month");
    assert_eq!(months.len(), 2);
    assert_eq!(
        (months[0].period_start, months[0].period_end),
        (at("2026-12-31T23:00:00Z"), at("2027-01-10T12:00:00Z"))
    );
    assert_eq!(
        (months[1].period_end, months[1].tokens),
        (at("2027-01-31T23:00:00Z"), 20)
    );
    assert_eq!(months[0].tokens, 10);
    assert_eq!(
        db.count("SELECT count(*) AS n FROM usage_period_kind_totals WHERE user_id = 7 AND period = 'month' AND kind = 'image_generation' AND period_start = '2027-01-10T12:00:00Z' AND tokens = 20"),
        1
    );
}

#[test]
fn a_manual_reset_of_an_unknown_subject_fails_naming_it_and_changes_nothing() {
    for subject in [Subject::User(999), Subject::Org(999)] {
        let db = TestDb::new();
        db.add_subject(Subject::User(1), "UTC", None, None);
        db.add_subject(Subject::Org(1), "UTC", None, None);
        let missing = subject.not_found("--user");

        let err = JobKind::ResetDaily
            .run(
                &db.ctx(),
                &mut db.conn(),
                at("2027-01-10T12:00:00Z"),
                &only(subject),
            )
            .unwrap_err();
        assert!(err.to_string().contains(&missing), "{err}");

        let out = support::output_of(
            db.binary()
                .args(["--run", "reset-monthly"])
                .args(flag(subject))
                .args(["--at", "2027-01-10T12:00:00Z", "--allow-future"]),
        );
        assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
        assert!(
            out.stdout.contains(&missing),
            "{}\n{}",
            out.stdout,
            out.stderr
        );
        assert_eq!(db.count("SELECT count(*) AS n FROM usage_periods"), 0);
    }
}
