//! Test harness: one private PostgreSQL cluster per test binary and test run, a migrated
//! template database, and a fresh database per test created from it, so tests run in
//! parallel (threads under `cargo test`, processes under `cargo nextest`).
//!
//! The cluster is shared by every process of one test binary started by the same parent
//! (cargo or nextest) and is stopped and deleted shortly after that parent exits.
//!
//! Tests that need the whole cluster quiet use [`TestDb::alone`]: a second cluster, on which
//! one test runs at a time across threads and processes. Transaction ids and snapshots are
//! cluster-wide, so any transaction open elsewhere in the cluster (another test's writer, even
//! in another database) holds back the aggregation watermark, and advisory locks show in the
//! cluster-wide `pg_locks`.
//!
//! # Where dates come from
//!
//! A test is right on any day it runs, so the calendar never decides its outcome:
//! - A test that seeds fixed dates (`'2026-11-10T12:00:00Z'`) runs every job and asks every
//!   question at a fixed instant too: `run_job(kind, "2026-11-10T12:00:00Z", ..)`, `--at` for
//!   the binary, `p_at` for the SQL functions. A fixed date never meets the real clock.
//! - A test that runs at the real clock (a daemon, `--run` without `--at`, a function without
//!   `p_at`) takes every date it seeds from the database's `now()`, through [`clock`], never
//!   from a constant: such a test is otherwise right this month and wrong the next.
//!
//! Both kinds pass with the clock moved (faketime; see the README's developer section).

pub mod alerts;
pub mod autofailover;
pub mod books;
pub mod clock;
pub mod daemon;
pub mod definitions;
pub mod docs;
pub mod netns;
pub mod notify;
pub mod orgs;
pub mod outbox;
pub mod outcome;
pub mod pgbouncer;
pub mod quota;
pub mod roles;
pub mod smtp;
pub mod webhooks;
pub mod writers;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool};
use usage_worker::config::{JobPlan, SchemaName, Settings};
use usage_worker::db;
use usage_worker::embedded_pg::{Durability, EmbeddedPg};
use usage_worker::jobs::{Ctx, JobError, JobKind, JobReport, RunOpts};

const TEMPLATE: &str = "uw_template";

pub struct Cluster {
    pub data_dir: PathBuf,
    pub bin_dir: PathBuf,
}

impl Cluster {
    pub fn url(&self, dbname: &str) -> String {
        format!(
            "postgres://postgres@/{dbname}?host={}",
            self.data_dir.display()
        )
    }
}

/// The cluster of this test binary, started (and its template migrated) on first use.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| start_shared_cluster(""))
}

/// The cluster for tests that must have it to themselves; see [`TestDb::alone`].
fn quiet_cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| start_shared_cluster("-alone"))
}

/// An exclusive `flock` on a file, released when dropped (also when the process dies).
pub(crate) struct FileLock {
    /// Closing the file releases the lock.
    _file: File,
}

impl FileLock {
    /// Blocks until this open file description holds the lock: threads and processes alike.
    pub(crate) fn acquire(path: &Path) -> FileLock {
        let file = File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // SAFETY: flock on a file descriptor we own.
        while unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            let error = std::io::Error::last_os_error();
            assert!(
                error.kind() == std::io::ErrorKind::Interrupted,
                "flock {}: {error}",
                path.display()
            );
        }
        FileLock { _file: file }
    }
}

fn start_shared_cluster(suffix: &str) -> Cluster {
    let owner = test_runner_pid();
    let exe = std::env::current_exe().expect("test binary path");
    let stem = exe
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "tests".into());
    let stem: String = stem.chars().take(40).collect();
    let base = std::env::temp_dir();
    let data_dir = base.join(format!("uw-t-{owner}-{stem}{suffix}"));
    // Removed with the cluster.
    let start_lock = FileLock::acquire(&base.join(format!("uw-t-{owner}-{stem}{suffix}.lock")));

    let mut pg = EmbeddedPg::start(&data_dir, None, Durability::Throwaway)
        .unwrap_or_else(|e| panic!("cannot start the test cluster: {e}"));
    if pg.started_here() {
        pg.stop_and_remove_when_gone(owner)
            .expect("start the cluster watcher");
    }
    let bin_dir = pg.bin_dir().to_path_buf();
    pg.keep_running();
    let cluster = Cluster {
        data_dir: pg.data_dir().to_path_buf(),
        bin_dir,
    };
    ensure_template(&cluster);
    drop(start_lock);
    cluster
}

/// The process that runs the tests (cargo or nextest): the parent, or, when the tests run
/// under a wrapper such as `faketime` (a cargo target runner), the wrapper's parent. Every test
/// process nextest starts then shares one cluster, as without the wrapper.
fn test_runner_pid() -> u32 {
    // SAFETY: getppid has no preconditions.
    let mut pid = unsafe { libc::getppid() } as u32;
    while std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "faketime")
    {
        // The fourth field of /proc/PID/stat, after the parenthesised command name.
        let parent = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let after_name = &stat[stat.rfind(')')? + 1..];
                after_name.split_whitespace().nth(1)?.parse().ok()
            });
        match parent {
            Some(parent) => pid = parent,
            None => break,
        }
    }
    pid
}

fn ensure_template(cluster: &Cluster) {
    let mut admin = db::connect(&cluster.url("postgres")).expect("connect to test cluster");
    #[derive(QueryableByName)]
    struct Exists {
        #[diesel(sql_type = Bool)]
        exists: bool,
    }
    let exists: Exists = diesel::sql_query(format!(
        "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = '{TEMPLATE}') AS exists"
    ))
    .get_result(&mut admin)
    .expect("query pg_database");
    if exists.exists {
        return;
    }
    admin
        .batch_execute(&format!("CREATE DATABASE {TEMPLATE}"))
        .expect("create template database");
    let mut conn = db::connect(&cluster.url(TEMPLATE)).expect("connect to template");
    db::run_migrations(&mut conn, &SchemaName::default()).expect("migrate template database");
    drop(conn);
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {TEMPLATE} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"
        ))
        .expect("mark template");
}

/// A fresh, migrated database for one test.
pub struct TestDb {
    pub url: String,
    /// The database's name.
    pub name: String,
    /// Held by [`TestDb::alone`] databases until the test ends.
    _alone: Option<FileLock>,
}

impl TestDb {
    pub fn new() -> TestDb {
        TestDb::create(cluster(), None)
    }

    /// A fresh database in a cluster where no other test runs until this one drops it; for
    /// tests that assert every committed event is aggregated, or that watch `pg_locks`.
    pub fn alone() -> TestDb {
        let cluster = quiet_cluster();
        let lock = FileLock::acquire(&cluster.data_dir.join("uw-tests-alone.lock"));
        TestDb::create(cluster, Some(lock))
    }

    fn create(cluster: &Cluster, alone: Option<FileLock>) -> TestDb {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let mut admin = db::connect(&cluster.url("postgres")).expect("connect to test cluster");
        admin
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE}"))
            .expect("create test database");
        TestDb {
            url: cluster.url(&name),
            name,
            _alone: alone,
        }
    }

    /// A connection in the worker's schema (`usage`), as the worker's own sessions are.
    pub fn conn(&self) -> PgConnection {
        connect(&self.url)
    }

    /// Default settings pointing at this database.
    pub fn settings(&self) -> Settings {
        let mut settings = Settings::default();
        settings.database.url = self.url.clone();
        settings.database.pool_size = 4;
        settings
    }

    pub fn ctx(&self) -> Arc<Ctx> {
        self.ctx_with(|_| {})
    }

    pub fn ctx_with(&self, change: impl FnOnce(&mut Settings)) -> Arc<Ctx> {
        let mut settings = self.settings();
        change(&mut settings);
        Arc::new(Ctx::new(Arc::new(settings), self.url.clone()))
    }

    /// Runs one query returning a single bigint column named `n`.
    pub fn count(&self, sql: &str) -> i64 {
        count(&mut self.conn(), sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Polls [`TestDb::count`] until it reaches `at_least` or `timeout` passes; returns the
    /// last count, so the caller's assertion says what was expected.
    pub fn wait_for_count(&self, sql: &str, at_least: i64, timeout: Duration) -> i64 {
        wait_for_count(|| self.count(sql), at_least, timeout)
    }

    /// Waits until the process `pid` has recorded its run as running.
    pub fn wait_for_running_pid(&self, pid: u32) {
        let running =
            format!("SELECT count(*) AS n FROM job_runs WHERE status = 'running' AND pid = {pid}");
        self.wait_for_count(&running, 1, Duration::from_secs(60));
    }

    /// A connection holding the lock that the `partitions` job waits for on its first
    /// query, keeping the job's run busy until the connection commits or is dropped.
    pub fn block_partitions_job(&self) -> PgConnection {
        let mut blocker = self.conn();
        blocker
            .batch_execute("BEGIN; LOCK TABLE usage_events_default IN ACCESS EXCLUSIVE MODE;")
            .expect("lock usage_events_default");
        blocker
    }

    /// Runs `kind` at `now` on this database, with default settings and `opts`.
    pub fn run_job(&self, kind: JobKind, now: &str, opts: &RunOpts) -> Result<JobReport, JobError> {
        kind.run(&self.ctx(), &mut self.conn(), at(now), opts)
    }

    /// Dry-runs `kind` at `now` on this database, with default settings.
    pub fn dry_run_job(&self, kind: JobKind, now: &str) -> Result<JobReport, JobError> {
        self.run_job(kind, now, &dry_run())
    }

    /// The `usage-worker` binary pointed at this database.
    pub fn binary(&self) -> Command {
        let mut command = binary();
        command.env("USAGE_WORKER__DATABASE__URL", &self.url);
        command
    }

    /// Inserts user `id` living in `zone`, with the address `user{id}@example.com`.
    pub fn add_user(&self, id: i64, zone: &str) {
        self.execute(&format!(
            "INSERT INTO users (id, email, timezone) VALUES ({id}, 'user{id}@example.com', '{zone}')"
        ));
    }

    pub fn execute(&self, sql: &str) {
        self.conn()
            .batch_execute(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// A connection to `url` with `search_path` = the default schema `usage`, like the worker's.
pub fn connect(url: &str) -> PgConnection {
    db::connect_in(url, &SchemaName::default()).unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

/// A context for jobs run in-process against `url` (any database, any role), default settings.
pub fn ctx_for(url: &str) -> Arc<Ctx> {
    let mut settings = Settings::default();
    settings.database.url = url.to_string();
    settings.database.pool_size = 2;
    Arc::new(Ctx::new(Arc::new(settings), url.to_string()))
}

/// The `lines` a dry run reports (what it would do, one line each).
pub fn report_lines(report: &JobReport) -> Vec<&str> {
    report.details["lines"]
        .as_array()
        .expect("a dry-run report lists its lines")
        .iter()
        .map(|l| l.as_str().expect("a line of text"))
        .collect()
}

/// The options of a dry run: the job reports what it would do and changes nothing.
pub fn dry_run() -> RunOpts {
    RunOpts {
        dry_run: true,
        ..RunOpts::default()
    }
}

/// Runs one query returning a single bigint column named `n`.
pub fn count(conn: &mut PgConnection, sql: &str) -> QueryResult<i64> {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    diesel::sql_query(sql).get_result::<N>(conn).map(|r| r.n)
}

/// `pg_dump` of database `dbname` with `args` (e.g. `--schema-only`), without the lines
/// that differ on every dump.
pub fn dump(dbname: &str, args: &[&str]) -> String {
    let cluster = cluster();
    let output = Command::new(cluster.bin_dir.join("pg_dump"))
        .args(args)
        .args(["-U", "postgres", "-h"])
        .arg(&cluster.data_dir)
        .arg(dbname)
        .output()
        .expect("run pg_dump");
    assert!(
        output.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // \restrict lines carry a random key per dump; everything else must match.
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The one text column `t` of one row (empty when NULL).
pub fn text(conn: &mut PgConnection, sql: &str) -> String {
    #[derive(QueryableByName)]
    struct T {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        t: Option<String>,
    }
    diesel::sql_query(sql)
        .get_result::<T>(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .t
        .unwrap_or_default()
}

/// An RFC 3339 instant, e.g. `2026-11-23T10:00:00Z`.
pub fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .with_timezone(&Utc)
}

/// Polls `done` until it holds or `timeout` has passed; returns whether it held.
/// The first of `candidates` that is a file: a tool from the system's packages that a test
/// drives (`what`, installed as `hint` says). Missing, it fails the test in CI (`CI` set),
/// whose script installs it, and elsewhere returns `None` after saying the test is skipped.
pub fn installed_tool(
    what: &str,
    candidates: impl IntoIterator<Item = PathBuf>,
    hint: &str,
) -> Option<PathBuf> {
    let found = candidates.into_iter().find(|p| p.is_file());
    if found.is_none() {
        assert!(std::env::var("CI").is_err(), "{what} is missing; {hint}");
        eprintln!("skipped: {what} is missing; {hint}");
    }
    found
}

pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `count` until it reaches `at_least` or `timeout` passes; returns the last count.
pub fn wait_for_count(count: impl Fn() -> i64, at_least: i64, timeout: Duration) -> i64 {
    let mut last = count();
    wait_until(timeout, || {
        last = count();
        last >= at_least
    });
    last
}

/// The `usage-worker` binary built for these tests.
pub fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_usage-worker"));
    command
        .env_remove("DATABASE_URL")
        .env("USAGE_WORKER__LOG__LEVEL", "info");
    for (key, _) in std::env::vars() {
        if key.starts_with("USAGE_WORKER__") && key != "USAGE_WORKER__LOG__LEVEL" {
            command.env_remove(key);
        }
    }
    command
}

/// The environment variable that sets `kind`'s schedule.
pub fn schedule_key(kind: JobKind) -> String {
    format!(
        "USAGE_WORKER__JOBS__{}__SCHEDULE",
        kind.config_key().to_uppercase()
    )
}

/// Schedules `only` with `schedule` through the environment and disables every other job.
pub fn schedule_only(command: &mut Command, only: JobKind, schedule: &str) {
    for &kind in JobKind::ALL {
        command.env(schedule_key(kind), if kind == only { schedule } else { "" });
    }
}

/// Schedules `partitions` with `schedule` in `settings` and disables every other job.
pub fn only_partitions(settings: &mut Settings, schedule: &str) {
    for kind in JobKind::ALL {
        let entry = settings
            .jobs
            .entry(kind.config_key().to_string())
            .or_default();
        entry.schedule = Some(if *kind == JobKind::Partitions {
            schedule.to_string()
        } else {
            String::new()
        });
    }
}

/// The plans of the jobs `settings` schedules.
pub fn scheduled_plans(settings: &Settings) -> Vec<JobPlan> {
    let plans = settings.job_plans().expect("job plans of valid settings");
    plans.into_iter().filter(|p| p.schedule.is_some()).collect()
}

/// The daemon on `url` with only `partitions` scheduled, every second.
pub fn daemon_command(url: &str) -> Command {
    let mut command = binary();
    command.env("USAGE_WORKER__DATABASE__URL", url);
    schedule_only(&mut command, JobKind::Partitions, "* * * * * *");
    command
}

/// Exit code and output of one finished invocation.
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` to completion.
pub fn output(mut command: Command) -> Out {
    output_of(&mut command)
}

/// Runs `command` to completion.
pub fn output_of(command: &mut Command) -> Out {
    let out = command.output().expect("run usage-worker");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `command` to completion; it must exit 0. Its stdout.
pub fn stdout_of_success(command: &mut Command) -> String {
    let out = output_of(command);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    out.stdout
}

/// Waits for `rerun`, started after a run was killed: it must succeed without naming the killed
/// process as still running.
pub fn rerun_succeeded(rerun: Child) -> Out {
    let out = rerun.wait_with_output().expect("wait for usage-worker");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        !stdout.contains("already running") && !stderr.contains("already running"),
        "the killed process was named as running:\n{stdout}\n{stderr}"
    );
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout,
        stderr,
    }
}

/// Writes a config file into a fresh temporary directory.
pub fn config_file(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(&path, text).expect("write config file");
    path
}

/// An empty database of this test's own (no migrations), dropped at the end.
pub struct EmptyDb {
    pub name: String,
}

impl EmptyDb {
    pub fn new(tag: &str) -> EmptyDb {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{tag}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        db::connect(&cluster().url("postgres"))
            .unwrap()
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE template0"))
            .unwrap();
        EmptyDb { name }
    }

    pub fn url(&self) -> String {
        cluster().url(&self.name)
    }

    /// A superuser connection with PostgreSQL's default search_path, as the application has.
    pub fn admin(&self) -> PgConnection {
        db::connect(&self.url()).unwrap()
    }

    /// The binary on this database, every schedule disabled, with extra environment.
    pub fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut command = binary();
        command
            .env("USAGE_WORKER__DATABASE__URL", self.url())
            .env("USAGE_WORKER__MAIL__TRANSPORT", "log")
            .args(args);
        for kind in JobKind::ALL {
            command.env(schedule_key(*kind), "");
        }
        for (key, value) in env {
            command.env(key, value);
        }
        output(command)
    }
}

impl Drop for EmptyDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = db::connect(&cluster().url("postgres")) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}
