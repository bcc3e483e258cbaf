//! The daemon as a systemd service: the unit verifies and is hardened; the real binary talks
//! the notify protocol (ready, watchdog, stopping) and drains its running job on SIGTERM;
//! `/healthz` and `/metrics` answer; logs carry syslog priorities under the journal.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use usage_worker::config::Settings;

use crate::support::daemon::Daemon;
use crate::support::notify::NotifySocket;
use crate::support::{self, TestDb};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// `systemd-analyze`, which these tests need: without it they fail rather than pass unseen
/// (`.ci/run` installs it).
fn systemd_analyze() -> Command {
    let available = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        available,
        "systemd-analyze is not installed; install the systemd package (apt-get install systemd)"
    );
    Command::new("systemd-analyze")
}

/// deploy/usage-worker.service with ExecStart pointing at the binary under test (verify
/// insists that the binary exists).
fn unit_copy(dir: &Path) -> std::path::PathBuf {
    let unit = std::fs::read_to_string(format!("{MANIFEST_DIR}/deploy/usage-worker.service"))
        .expect("read deploy/usage-worker.service");
    assert!(unit.contains("ExecStart=/usr/bin/usage-worker "));
    let path = dir.join("usage-worker.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/usage-worker", env!("CARGO_BIN_EXE_usage-worker")),
    )
    .unwrap();
    path
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let mut analyze = systemd_analyze();
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_copy(dir.path());
    let out = analyze.arg("verify").arg(&unit).output().unwrap();
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_unit_is_hardened_to_an_exposure_of_at_most_2_as_the_runbook_says() {
    let mut analyze = systemd_analyze();
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_copy(dir.path());
    let out = analyze
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let figure = text
        .lines()
        .find_map(|l| l.split("usage-worker.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no overall exposure in:\n{text}"));
    let exposure: f64 = figure.parse().unwrap();
    assert!(exposure <= 2.0, "exposure {exposure} > 2.0:\n{text}");
    let runbook = std::fs::read_to_string(format!("{MANIFEST_DIR}/docs/OPERATIONS.md")).unwrap();
    assert!(
        runbook.contains(&format!("exposure {figure} OK")),
        "docs/OPERATIONS.md does not state the exposure figure {figure} (as `exposure {figure} OK`)"
    );
}

#[test]
fn under_systemd_the_daemon_reports_ready_pings_the_watchdog_and_finishes_its_job_on_sigterm() {
    let db = TestDb::new();
    let mut blocker = db.block_partitions_job();
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify");
    let mut notify = NotifySocket::bind(&socket_path);

    let mut command = support::daemon_command(&db.url);
    command
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "2000000")
        .env("USAGE_WORKER__SCHEDULER__SHUTDOWN_GRACE", "5m");
    let mut daemon = Daemon::start(command);

    notify.wait_for("READY=1");
    notify.wait_for("STATUS=running partitions");
    for _ in 0..3 {
        notify.wait_for("WATCHDOG=1");
    }
    let running =
        "SELECT count(*) AS n FROM job_runs WHERE job = 'partitions' AND status = 'running'";
    assert_eq!(db.count(running), 1);
    let run_id = db.count("SELECT id AS n FROM job_runs WHERE status = 'running'");

    daemon.terminate();
    notify.wait_for("STOPPING=1");
    let after_stopping = notify.drain_for(Duration::from_secs(3));
    assert!(
        !after_stopping.iter().any(|m| m.contains("WATCHDOG=1")),
        "watchdog pings after the loop stopped: {after_stopping:?}"
    );
    assert!(
        daemon.is_running(),
        "the daemon exited while its job was still running"
    );
    assert_eq!(db.count(running), 1, "the running job was cut short");

    blocker.batch_execute("COMMIT").unwrap();
    assert_eq!(daemon.wait_for_exit(), 0);
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) AS n FROM job_runs WHERE id = {run_id} AND status = 'succeeded'"
        )),
        1,
        "the run that was running at SIGTERM did not finish successfully"
    );
}

pub(crate) fn get(address: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).expect("connect to the metrics address");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {response:?}"));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (code, body.to_string())
}

pub(crate) fn metrics_address(daemon: &mut Daemon) -> String {
    let line = daemon.wait_for_line("serving /healthz and /metrics");
    line.split("metrics.listen=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in `{line}`"))
        .to_string()
}

/// The value of the sample line that starts with `series ` in an exposition.
pub(crate) fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

#[test]
fn healthz_and_metrics_report_the_database_the_scheduler_and_the_runs() {
    let db = TestDb::new();
    db.execute(
        "INSERT INTO usage_events (user_id, kind, tokens)
         VALUES (1, 'ai_response', 10), (2, 'ai_response', 20), (3, 'message_sent', 0)",
    );
    let mut command = support::daemon_command(&db.url);
    command.env("USAGE_WORKER__METRICS__LISTEN", "127.0.0.1:0");
    let mut daemon = Daemon::start(command);
    let address = metrics_address(&mut daemon);
    daemon.wait_for_line("job succeeded");

    let (code, health) = get(&address, "/healthz");
    assert_eq!(code, 200, "{health}");
    assert!(
        health.contains("database: ok") && health.contains("scheduler: ok"),
        "{health}"
    );

    let succeeded = "usage_worker_job_runs_total{job=\"partitions\",status=\"succeeded\"}";
    let mut metrics = String::new();
    support::wait_until(Duration::from_secs(30), || {
        let (code, body) = get(&address, "/metrics");
        assert_eq!(code, 200, "{body}");
        metrics = body;
        sample(&metrics, succeeded).is_some()
    });
    assert!(
        sample(&metrics, succeeded).unwrap_or(0.0) >= 1.0,
        "{metrics}"
    );
    assert!(
        sample(
            &metrics,
            "usage_worker_job_run_duration_seconds_count{job=\"partitions\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{metrics}"
    );
    let last_success = sample(
        &metrics,
        "usage_worker_job_last_success_timestamp_seconds{job=\"partitions\"}",
    )
    .expect("last success of partitions");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - 3600.0..=now + 60.0).contains(&last_success),
        "{last_success}"
    );
    assert_eq!(
        sample(&metrics, "usage_worker_events_unaggregated"),
        Some(3.0)
    );
    assert!(sample(&metrics, "usage_worker_watermark_age_seconds").is_some());
    assert_eq!(sample(&metrics, "usage_worker_database_up"), Some(1.0));
    assert_eq!(sample(&metrics, "usage_worker_scheduler_alive"), Some(1.0));
    // One host, one clock: the measured skew is the round trip's noise.
    let skew = sample(&metrics, "usage_worker_clock_skew_seconds").expect("clock skew");
    assert!(skew.abs() < 1.0, "{skew}");
    let has_alerts_table =
        db.count("SELECT (to_regclass('quota_alerts') IS NOT NULL)::int::bigint AS n") == 1;
    assert_eq!(
        sample(&metrics, "usage_worker_alerts{status=\"pending\"}").is_some(),
        has_alerts_table,
        "alerts are reported exactly when the quota_alerts table exists:\n{metrics}"
    );

    let runbook = std::fs::read_to_string(format!("{MANIFEST_DIR}/docs/OPERATIONS.md")).unwrap();
    for name in metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
    {
        assert!(
            runbook.contains(&format!("`{name}")),
            "metric {name} is not documented in docs/OPERATIONS.md"
        );
    }

    let (code, _) = get(&address, "/nothing-here");
    assert_eq!(code, 404);
    assert_eq!(daemon.stop().0, 0);
}

#[test]
fn healthz_answers_503_while_the_database_cannot_be_reached() {
    let url = support::cluster().url("no_such_database");
    let mut command = support::daemon_command(&url);
    command.env("USAGE_WORKER__METRICS__LISTEN", "127.0.0.1:0");
    let mut daemon = Daemon::start(command);
    let address = metrics_address(&mut daemon);
    let (code, health) = get(&address, "/healthz");
    assert_eq!(code, 503, "{health}");
    assert!(health.contains("no_such_database"), "{health}");
    assert!(health.contains("scheduler: starting"), "{health}");
    let (code, metrics) = get(&address, "/metrics");
    assert_eq!(code, 200);
    assert_eq!(
        sample(&metrics, "usage_worker_database_up"),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(daemon.stop().0, 0);
}

#[test]
fn under_the_journal_log_lines_carry_syslog_priorities_and_no_timestamps() {
    let db = TestDb::new();
    let dir = tempfile::tempdir().unwrap();
    let run = |journal: bool| -> String {
        let path = dir.path().join(format!("stderr-{journal}"));
        let file = std::fs::File::create(&path).unwrap();
        let meta = file.metadata().unwrap();
        let mut command = support::binary();
        command
            .args(["--run", "partitions"])
            .env("USAGE_WORKER__DATABASE__URL", &db.url)
            .stdout(Stdio::null())
            .stderr(file);
        if journal {
            command.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
        } else {
            // The variable alone is not enough: stderr must be that stream.
            command.env("JOURNAL_STREAM", "1:1");
        }
        assert!(command.status().unwrap().success());
        std::fs::read_to_string(&path).unwrap()
    };

    let journal = run(true);
    let started = journal
        .lines()
        .find(|l| l.contains("job started"))
        .unwrap_or_else(|| panic!("no `job started` line in:\n{journal}"));
    assert!(
        started.starts_with("<6>") && started.contains("INFO"),
        "{started}"
    );
    assert!(
        journal.lines().all(|l| l.starts_with('<')),
        "a line without a priority prefix:\n{journal}"
    );
    assert!(
        !journal.contains("\u{1b}["),
        "colours in the journal:\n{journal}"
    );

    let terminal = run(false);
    let started = terminal
        .lines()
        .find(|l| l.contains("job started"))
        .unwrap();
    assert!(
        started.starts_with(|c: char| c.is_ascii_digit()),
        "outside the journal a line starts with its timestamp: {started}"
    );
}

#[test]
fn metrics_listen_must_be_a_socket_address() {
    let env = |value: &str| {
        vec![(
            "USAGE_WORKER__METRICS__LISTEN".to_string(),
            value.to_string(),
        )]
    };
    let err = Settings::load_with_env(None, env("localhost:9187")).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("metrics.listen") && text.contains("127.0.0.1:9187"),
        "{text}"
    );
    let settings = Settings::load_with_env(None, env("127.0.0.1:9187")).unwrap();
    assert_eq!(
        settings.metrics.listen_address(),
        Some("127.0.0.1:9187".parse().unwrap())
    );
    let off = Settings::load_with_env(None, env("")).unwrap();
    assert_eq!(off.metrics.listen_address(), None);
}
