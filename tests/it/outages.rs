//! The real binary against a PostgreSQL that goes away: the daemon keeps running, retries,
//! and works again once the database is back; `--run` exits 75 while it is down.

use crate::support;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use usage_worker::db;
use usage_worker::embedded_pg::{Durability, EmbeddedPg};
use usage_worker::jobs::JobKind;

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

    fn count(&self, sql: &str) -> i64 {
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        use diesel::RunQueryDsl;
        db::connect(&self.url())
            .ok()
            .and_then(|mut c| diesel::sql_query(sql).get_result::<N>(&mut c).ok())
            .map_or(-1, |r| r.n)
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn daemon(url: &str) -> Child {
    let mut command = support::binary();
    command
        .env("USAGE_WORKER__DATABASE__URL", url)
        .env("USAGE_WORKER__DATABASE__CONNECT_TIMEOUT", "2s")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    support::schedule_only(&mut command, JobKind::Partitions, "* * * * * *");
    command.spawn().expect("start daemon")
}

fn wait_for(cluster: &OwnCluster, sql: &str, at_least: i64, timeout: Duration) -> i64 {
    let deadline = Instant::now() + timeout;
    loop {
        let n = cluster.count(sql);
        if n >= at_least || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn terminate(mut child: Child) -> i32 {
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(Instant::now() < deadline, "daemon did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_daemon_survives_a_database_restart_and_works_again_afterwards() {
    let mut cluster = OwnCluster::start("restart");
    let mut child = daemon(&cluster.url());
    let succeeded = "SELECT count(*) AS n FROM job_runs WHERE status = 'succeeded'";
    assert!(wait_for(&cluster, succeeded, 2, Duration::from_secs(30)) >= 2);

    cluster.stop();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the daemon exited when the database went away"
    );
    cluster.restart();
    let before = cluster.count(succeeded);
    assert!(
        wait_for(&cluster, succeeded, before + 2, Duration::from_secs(30)) >= before + 2,
        "no successful runs after the database came back"
    );
    assert_eq!(terminate(child), 0);
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

    let mut child = daemon(&url);
    std::thread::sleep(Duration::from_secs(3));
    assert!(child.try_wait().unwrap().is_none(), "the daemon gave up");
    cluster.restart();
    // First start: the daemon migrates the empty database itself, then runs jobs.
    assert!(
        wait_for(
            &cluster,
            "SELECT count(*) AS n FROM job_runs WHERE status = 'succeeded'",
            1,
            Duration::from_secs(60)
        ) >= 1
    );
    assert_eq!(terminate(child), 0);
}
