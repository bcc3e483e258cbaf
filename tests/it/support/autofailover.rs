//! A real HA pair on this machine: pg_auto_failover (Debian's `postgresql-<version>-auto-failover`,
//! `pg_autoctl`) with a monitor, a primary and a secondary, each a `pg_autoctl … --run`
//! process on a port of its own on localhost, as the `postgres` user when root. Dropped: every
//! node stopped and its directory deleted.
//!
//! Without `pg_autoctl` the test that needs it skips, saying so, except under CI.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use diesel::pg::PgConnection;

use super::{count, text, wait_until};

pub struct AutoFailover {
    root: PathBuf,
    bin_dir: PathBuf,
    pub monitor_port: u16,
    pub node_ports: [u16; 2],
    processes: Vec<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

impl AutoFailover {
    /// A monitor and two nodes with database `dbname`, the first primary and the second its
    /// secondary; `None` (saying why) where pg_autoctl is missing outside CI.
    pub fn start(dbname: &str) -> Option<AutoFailover> {
        let pg_autoctl = super::installed_tool(
            "pg_autoctl",
            ["/usr/bin/pg_autoctl", "/usr/local/bin/pg_autoctl"].map(PathBuf::from),
            "install Debian's postgresql-<version>-auto-failover package",
        )?;
        let root = std::env::temp_dir().join(format!("uw-ha-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("create the HA directory");
        set_mode(&root, 0o777);
        let mut ha = AutoFailover {
            root,
            bin_dir: super::cluster().bin_dir.clone(),
            monitor_port: free_port(),
            node_ports: [free_port(), free_port()],
            processes: Vec::new(),
        };
        let monitor_dir = ha.root.join("monitor");
        let monitor = ha.pg_autoctl(&pg_autoctl, |c| {
            c.args(["create", "monitor", "--pgdata"])
                .arg(&monitor_dir)
                .args(["--pgport", &ha.monitor_port.to_string()]);
        });
        ha.processes.push(monitor);
        let monitor_url = format!(
            "postgres://autoctl_node@localhost:{}/pg_auto_failover?sslmode=disable",
            ha.monitor_port
        );
        assert!(
            wait_until(Duration::from_secs(60), || ha.monitor().is_some()),
            "the pg_auto_failover monitor did not start; see {}",
            ha.root.display()
        );
        for (i, port) in ha.node_ports.into_iter().enumerate() {
            let node_dir = ha.root.join(format!("node{}", i + 1));
            let node = ha.pg_autoctl(&pg_autoctl, |c| {
                c.args(["create", "postgres", "--pgdata"])
                    .arg(&node_dir)
                    .args(["--pgport", &port.to_string(), "--dbname", dbname])
                    .args(["--name", &format!("node{}", i + 1)])
                    .args(["--monitor", &monitor_url]);
            });
            ha.processes.push(node);
            let states = if i == 0 {
                "single"
            } else {
                "primary,secondary"
            };
            assert!(
                ha.wait_for_states(states, Duration::from_secs(120)),
                "node{} did not reach {states}: {}",
                i + 1,
                ha.states()
            );
        }
        Some(ha)
    }

    /// `pg_autoctl` with `args` as a long-running process (`--run`), as the postgres user
    /// when root, its state kept under this pair's directory.
    fn pg_autoctl(&self, pg_autoctl: &Path, args: impl FnOnce(&mut Command)) -> Child {
        let mut command = if running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(pg_autoctl);
            c
        } else {
            Command::new(pg_autoctl)
        };
        args(&mut command);
        command
            .args(["--hostname", "localhost", "--auth", "trust", "--no-ssl"])
            .arg("--pgctl")
            .arg(self.bin_dir.join("pg_ctl"))
            .arg("--run")
            .env("XDG_CONFIG_HOME", self.root.join("config"))
            .env("XDG_DATA_HOME", self.root.join("data"))
            .env("XDG_RUNTIME_DIR", self.root.join("run"))
            .env("HOME", &self.root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(self.root.join(format!("log-{}", self.processes.len())))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .spawn()
            .expect("start pg_autoctl")
    }

    fn monitor(&self) -> Option<PgConnection> {
        use diesel::Connection;
        PgConnection::establish(&format!(
            "postgres://postgres@localhost:{}/pg_auto_failover?connect_timeout=2",
            self.monitor_port
        ))
        .ok()
    }

    /// The nodes' reported states in node order, e.g. `primary,secondary`, once each has
    /// reached its goal; empty while one is still on its way.
    pub fn states(&self) -> String {
        let Some(mut monitor) = self.monitor() else {
            return String::new();
        };
        let settled = count(
            &mut monitor,
            "SELECT count(*) AS n FROM pgautofailover.node WHERE reportedstate <> goalstate",
        )
        .unwrap_or(1);
        if settled != 0 {
            return String::new();
        }
        text(
            &mut monitor,
            "SELECT coalesce(string_agg(reportedstate::text, ',' ORDER BY nodeid), '') AS t
               FROM pgautofailover.node",
        )
    }

    pub fn wait_for_states(&self, states: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.states() == states)
    }

    /// Asks the monitor to fail over to the secondary and waits until the roles have swapped.
    pub fn failover(&self) {
        let mut monitor = self.monitor().expect("the monitor answers");
        diesel::connection::SimpleConnection::batch_execute(
            &mut monitor,
            "SELECT pgautofailover.perform_failover()",
        )
        .expect("perform_failover");
        assert!(
            self.wait_for_states("secondary,primary", Duration::from_secs(120)),
            "the failover did not complete: {}",
            self.states()
        );
    }

    /// Database `dbname` through [`AutoFailover::url`], migrated, as a test database.
    pub fn test_db(&self, dbname: &str) -> super::TestDb {
        let url = self.url(dbname);
        let mut conn = super::connect(&url);
        usage_worker::db::run_migrations(&mut conn, &usage_worker::config::SchemaName::default())
            .expect("migrate the primary");
        super::TestDb {
            url,
            name: dbname.to_string(),
            _alone: None,
        }
    }

    /// Both nodes in one URL; libpq connects to whichever is the primary.
    pub fn url(&self, dbname: &str) -> String {
        format!(
            "postgres://postgres@localhost:{},localhost:{}/{dbname}?target_session_attrs=read-write",
            self.node_ports[0], self.node_ports[1]
        )
    }
}

impl Drop for AutoFailover {
    fn drop(&mut self) {
        // Nodes first, then the monitor: each pg_autoctl stops its PostgreSQL on SIGTERM.
        for child in self.processes.iter_mut().rev() {
            // SAFETY: kill has no memory-safety preconditions; runuser passes the signal on.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let stopped = wait_until(Duration::from_secs(30), || {
                child.try_wait().ok().flatten().is_some()
            });
            if !stopped {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // Whatever PostgreSQL is left (a node stopped while its keeper was restarting it).
        for dir in ["node2", "node1", "monitor"] {
            let data = self.root.join(dir);
            if data.join("postmaster.pid").exists() {
                let mut stop = if running_as_root() {
                    let mut c = Command::new("runuser");
                    c.args(["-u", "postgres", "--"])
                        .arg(self.bin_dir.join("pg_ctl"));
                    c
                } else {
                    Command::new(self.bin_dir.join("pg_ctl"))
                };
                let _ = stop
                    .args(["stop", "-m", "immediate", "-D"])
                    .arg(&data)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        if std::env::var_os("UW_KEEP_HA").is_none() {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}
