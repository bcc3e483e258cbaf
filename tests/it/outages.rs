//! The real binary against a PostgreSQL that goes away: the daemon keeps running, retries,
//! and works again once the database is back; `--run` exits 75 while it is down.

use std::path::PathBuf;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use usage_worker::config::SchemaName;
use usage_worker::db;
use usage_worker::embedded_pg::{Durability, EmbeddedPg};

use crate::support::{self, daemon::Daemon};

/// A cluster of this test's own, so it can be stopped without disturbing other tests.
struct OwnCluster {
    pg: Option<EmbeddedPg>,
    dir: PathBuf,
}

impl OwnCluster {
    fn start(tag: &str) -> OwnCluster {
        let dir = std::env::temp_dir().join(format!("uw-outage-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pg = EmbeddedPg::start(&dir, None, Durability::Throwaway).expect("start cluster");
        let mut admin = db::connect(&pg.url("postgres")).unwrap();
        admin.batch_execute("CREATE DATABASE app").unwrap();
        OwnCluster { pg: Some(pg), dir }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@/app?host={}", self.dir.display())
    }

    fn stop(&mut self) {
        if let Some(pg) = self.pg.take() {
            pg.stop().expect("stop cluster");
            std::mem::forget(pg);
        }
    }

    fn restart(&mut self) {
        self.pg = Some(EmbeddedPg::start(&self.dir, None, Durability::Throwaway).unwrap());
    }

    /// The count `sql` returns, or -1 while the database cannot answer.
    fn count(&self, sql: &str) -> i64 {
        db::connect_in(&self.url(), &SchemaName::default())
            .ok()
            .and_then(|mut c| support::count(&mut c, sql).ok())
            .unwrap_or(-1)
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn daemon(url: &str) -> Daemon {
    let mut command = support::daemon_command(url);
    command.env("USAGE_WORKER__DATABASE__CONNECT_TIMEOUT", "2s");
    Daemon::start(command)
}

#[test]
fn the_daemon_survives_a_database_restart_and_works_again_afterwards() {
    let mut cluster = OwnCluster::start("restart");
    let mut daemon = daemon(&cluster.url());
    let succeeded = "SELECT count(*) AS n FROM job_runs WHERE status = 'succeeded'";
    assert!(support::wait_for_count(|| cluster.count(succeeded), 2, Duration::from_secs(30)) >= 2);

    cluster.stop();
    // Two ticks that found no database: the daemon has lived through the outage so far.
    daemon.wait_for_lines("job could not start", 2);
    assert!(
        daemon.is_running(),
        "the daemon exited when the database went away"
    );
    cluster.restart();
    let before = cluster.count(succeeded);
    assert!(
        support::wait_for_count(
            || cluster.count(succeeded),
            before + 2,
            Duration::from_secs(30)
        ) >= before + 2,
        "no successful runs after the database came back"
    );
    assert_eq!(daemon.stop().0, 0);
}

#[test]
fn with_the_database_down_run_exits_75_and_the_daemon_waits_for_it() {
    let mut cluster = OwnCluster::start("down");
    let url = cluster.url();
    cluster.stop();

    let out = support::binary()
        .args(["--run", "partitions"])
        .env("USAGE_WORKER__DATABASE__URL", &url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(75));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("socket") && stderr.contains(".s.PGSQL.5432"),
        "{stderr}"
    );

    let mut daemon = daemon(&url);
    daemon.wait_for_lines("database not ready", 2);
    assert!(daemon.is_running(), "the daemon gave up");
    cluster.restart();
    // First start: the daemon migrates the empty database itself, then runs jobs.
    assert!(
        support::wait_for_count(
            || cluster.count("SELECT count(*) AS n FROM job_runs WHERE status = 'succeeded'"),
            1,
            Duration::from_secs(60)
        ) >= 1
    );
    assert_eq!(daemon.stop().0, 0);
}
