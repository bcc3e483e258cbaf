//! The binary as an operator runs it: configuration errors, usage errors, exit codes.

use crate::support::{TestDb, binary, config_file, output};

fn run(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = binary();
    command.args(args);
    for (k, v) in envs {
        command.env(k, v);
    }
    let out = output(command);
    (out.code, out.stdout, out.stderr)
}

/// `--check-config` with `args` and `envs`, which must exit 78: its stderr.
fn check_config_refuses(args: &[&str], envs: &[(&str, &str)]) -> String {
    let (code, _, stderr) = run(&[&["--check-config"], args].concat(), envs);
    assert_eq!(code, 78, "{stderr}");
    stderr
}

/// `--check-config` with a configuration file holding `text`, which must exit 78: its stderr.
fn check_config_refuses_file(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(dir.path(), text);
    check_config_refuses(&["--config", path.to_str().unwrap()], &[])
}

#[test]
fn a_misspelled_config_key_exits_78_naming_the_key() {
    let stderr = check_config_refuses_file(
        "[database]\nurl = \"postgres://x@localhost/db\"\npool_sise = 4\n",
    );
    assert!(stderr.contains("database.pool_sise"), "{stderr}");
}

#[test]
fn a_misspelled_section_exits_78_naming_it() {
    let stderr = check_config_refuses_file("[databse]\nurl = \"postgres://x@localhost/db\"\n");
    assert!(stderr.contains("databse"), "{stderr}");
}

#[test]
fn a_bad_cron_string_exits_78_naming_the_key_and_the_expected_form() {
    let stderr = check_config_refuses_file("[jobs.partitions]\nschedule = \"61 * * * *\"\n");
    assert!(stderr.contains("jobs.partitions.schedule"), "{stderr}");
    assert!(stderr.contains("*/15 * * * *"), "{stderr}");
}

#[test]
fn an_unknown_job_section_exits_78_listing_the_jobs() {
    let stderr = check_config_refuses_file("[jobs.agregate]\nschedule = \"* * * * *\"\n");
    assert!(
        stderr.contains("jobs.agregate") && stderr.contains("partitions"),
        "{stderr}"
    );
}

#[test]
fn a_wrongly_typed_environment_value_exits_78_naming_the_key() {
    let stderr = check_config_refuses(&[], &[("USAGE_WORKER__DATABASE__POOL_SIZE", "many")]);
    assert!(stderr.contains("database.pool_size"), "{stderr}");
}

#[test]
fn a_bad_duration_exits_78_naming_the_key() {
    let stderr = check_config_refuses(
        &[],
        &[("USAGE_WORKER__SCHEDULER__SHUTDOWN_GRACE", "30 fortnights")],
    );
    assert!(stderr.contains("scheduler.shutdown_grace"), "{stderr}");
}

#[test]
fn check_config_prints_the_effective_config_without_the_password() {
    let (code, stdout, stderr) = run(
        &["--check-config"],
        &[
            (
                "DATABASE_URL",
                "postgres://worker:s3cr3t-pw@db.internal:5432/usage",
            ),
            ("USAGE_WORKER__JOBS__PARTITIONS__SCHEDULE", "0 3 * * *"),
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains("s3cr3t-pw") && !stderr.contains("s3cr3t-pw"));
    assert!(
        stdout.contains("postgres://worker:***@db.internal:5432/usage"),
        "{stdout}"
    );
    assert!(stdout.contains("0 3 * * *"), "{stdout}");
}

#[test]
fn an_unreachable_database_exits_75_naming_the_host() {
    let (code, _, stderr) = run(
        &["--run", "partitions"],
        &[
            (
                "USAGE_WORKER__DATABASE__URL",
                "postgres://worker:pw@127.0.0.1:1/usage",
            ),
            ("USAGE_WORKER__DATABASE__CONNECT_TIMEOUT", "2s"),
        ],
    );
    assert_eq!(code, 75, "{stderr}");
    assert!(stderr.contains("127.0.0.1"), "{stderr}");
    assert!(!stderr.contains(":pw@"), "{stderr}");
}

#[test]
fn a_missing_database_url_is_a_configuration_error() {
    let (code, _, stderr) = run(&["--status"], &[]);
    assert_eq!(code, 78, "{stderr}");
    assert!(stderr.contains("database.url"), "{stderr}");
}

#[test]
fn an_unknown_job_is_a_usage_error_listing_the_valid_names() {
    let (code, _, stderr) = run(&["--run", "agregate"], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("partitions"), "{stderr}");
}

#[test]
fn run_partitions_at_an_instant_then_again_then_dry_run() {
    let db = TestDb::new();
    let env = [("USAGE_WORKER__DATABASE__URL", db.url.as_str())];
    let at = ["--run", "partitions", "--at", "2027-01-15T00:00:00Z"];
    let (code, stdout, stderr) = run(&at, &env);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("usage_events_2027_04"), "{stdout}");
    assert_eq!(
        db.count(
            "SELECT count(*) AS n FROM pg_inherits WHERE inhparent = 'usage_events'::regclass"
        ),
        5
    );

    let (code, stdout, _) = run(&at, &env);
    assert_eq!(code, 0);
    assert!(stdout.contains("all 4 partitions present"), "{stdout}");

    let runs_before = db.count("SELECT count(*) AS n FROM job_runs");
    let (code, stdout, _) = run(
        &[
            "--run",
            "partitions",
            "--at",
            "2027-06-15T00:00:00Z",
            "--dry-run",
        ],
        &env,
    );
    assert_eq!(code, 0);
    assert!(
        stdout.contains("would create") && stdout.contains("dry run"),
        "{stdout}"
    );
    assert_eq!(
        db.count(
            "SELECT count(*) AS n FROM pg_inherits WHERE inhparent = 'usage_events'::regclass"
        ),
        5
    );
    assert_eq!(db.count("SELECT count(*) AS n FROM job_runs"), runs_before);

    let (code, stdout, _) = run(&["--status"], &env);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("partitions") && stdout.contains("succeeded"),
        "{stdout}"
    );
    let (code, stdout, _) = run(&["--list-jobs"], &env);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("0 2 * * *") && stdout.contains("succeeded"),
        "{stdout}"
    );
}

#[test]
fn list_jobs_describes_the_retention_and_thresholds_in_effect() {
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(
        dir.path(),
        "[retention]\nevents_months = 36\n\n[alerts]\nthresholds = [50, 90]\n",
    );
    let (code, stdout, stderr) = run(&["--list-jobs", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{stderr}");
    let line = |job: &str| job_row(&stdout, job);
    assert!(
        line("retention").contains("older than 36 months"),
        "{stdout}"
    );
    assert!(
        line("alerts").contains("past 50 %/90 % of a limit"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("24 months") && !stdout.contains("80 %"),
        "{stdout}"
    );
}

/// The row of `job` in the output of `--list-jobs`.
fn job_row(stdout: &str, job: &str) -> String {
    stdout
        .lines()
        .find(|l| l.starts_with(&format!("{job} ")))
        .unwrap_or_else(|| panic!("no {job} row:\n{stdout}"))
        .to_string()
}

#[test]
fn list_jobs_shows_each_jobs_latest_run_among_many() {
    let db = TestDb::new();
    // A day of aggregate runs every 5 s (its default schedule), then a failed one; one
    // alerts run; no reset-daily run.
    db.execute(
        "INSERT INTO job_runs (job, trigger, scheduled_for, started_at, finished_at, status, host, pid)
         SELECT 'aggregate', 'cron', t, t, t + interval '1 second', 'succeeded', 'h', 1
           FROM generate_series(timestamptz '2026-11-09T12:00:00Z',
                                timestamptz '2026-11-10T11:59:55Z', interval '5 seconds') AS t;
         INSERT INTO job_runs (job, trigger, scheduled_for, started_at, finished_at, status, host, pid, error)
         VALUES ('aggregate', 'cron', '2026-11-10T12:00:00Z', '2026-11-10T12:00:00Z',
                 '2026-11-10T12:00:01Z', 'failed', 'h', 1, 'boom'),
                ('alerts', 'cron', '2026-11-10T08:05:00Z', '2026-11-10T08:05:00Z',
                 '2026-11-10T08:05:02Z', 'succeeded', 'h', 1, NULL);",
    );
    let env = [("USAGE_WORKER__DATABASE__URL", db.url.as_str())];
    let (code, stdout, stderr) = run(&["--list-jobs"], &env);
    assert_eq!(code, 0, "{stderr}");
    let line = |job: &str| job_row(&stdout, job);
    let aggregate = line("aggregate");
    assert!(
        aggregate.contains("2026-11-10 12:00:00Z failed"),
        "{aggregate}"
    );
    let alerts = line("alerts");
    assert!(
        alerts.contains("2026-11-10 08:05:00Z succeeded"),
        "{alerts}"
    );
    assert!(line("reset-daily").contains("never"), "{stdout}");
}
