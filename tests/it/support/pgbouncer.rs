//! A real PgBouncer (Debian's `pgbouncer` package) in front of the test cluster, one per test:
//! it listens on 127.0.0.1 on a free port and reaches the cluster over its Unix socket. As
//! root it runs as the `postgres` system user, as the cluster does (PgBouncer refuses root).
//!
//! Without the package the tests that need it skip, saying so, except under CI (`CI` set),
//! where `.ci/run` installs it and a missing PgBouncer fails them.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{cluster, wait_until};

/// How PgBouncer hands server connections to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    /// A server connection per client session.
    Session,
    /// A server connection per transaction: what Supabase's port 6543, Neon's `-pooler` host and
    /// Heroku's connection pooling hand out.
    Transaction,
}

pub struct PgBouncer {
    pub port: u16,
    dir: PathBuf,
    child: Child,
}

impl PgBouncer {
    /// PgBouncer in `mode` with at most `pool_size` server connections per database and user,
    /// letting in the cluster's roles named in `users` (no password asked). `None` when the
    /// package is missing outside CI.
    pub fn start(mode: PoolMode, pool_size: u32, users: &[&str]) -> Option<PgBouncer> {
        let binary = super::installed_tool(
            "pgbouncer",
            pgbouncer_candidates(),
            "install Debian's pgbouncer package (apt-get install pgbouncer)",
        )?;
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("uw-pgbouncer-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the pgbouncer directory");
        set_mode(&dir, 0o777);
        let userlist: String = users.iter().map(|u| format!("\"{u}\" \"\"\n")).collect();
        std::fs::write(dir.join("userlist.txt"), userlist).expect("write userlist.txt");
        let mode = match mode {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        };
        let ini = format!(
            "[databases]\n* = host={socket_dir}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
             listen_port = {port}\nunix_socket_dir =\nauth_type = trust\n\
             auth_file = {dir}/userlist.txt\npool_mode = {mode}\ndefault_pool_size = {pool_size}\n\
             max_client_conn = 200\nserver_reset_query = DISCARD ALL\nlogfile = {dir}/pgbouncer.log\n\
             pidfile = {dir}/pgbouncer.pid\nignore_startup_parameters = extra_float_digits,options\n",
            socket_dir = cluster().data_dir.display(),
            dir = dir.display(),
        );
        let ini_path = dir.join("pgbouncer.ini");
        std::fs::write(&ini_path, ini).expect("write pgbouncer.ini");
        for file in ["userlist.txt", "pgbouncer.ini"] {
            set_mode(&dir.join(file), 0o644);
        }
        let mut command = if running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&binary);
            c
        } else {
            Command::new(&binary)
        };
        let child = command
            .arg(&ini_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pgbouncer");
        let bouncer = PgBouncer { port, dir, child };
        let listening = wait_until(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(listening, "pgbouncer did not listen: {}", bouncer.log());
        Some(bouncer)
    }

    /// The URL of `dbname` through this PgBouncer as `user` (with `password`, which PgBouncer
    /// never asks for).
    pub fn url(&self, user: &str, password: Option<&str>, dbname: &str) -> String {
        let credentials = match password {
            Some(password) => format!("{user}:{password}"),
            None => user.to_string(),
        };
        format!("postgres://{credentials}@127.0.0.1:{}/{dbname}", self.port)
    }

    /// PgBouncer's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions. runuser passes SIGTERM on.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where pgbouncer may be: on PATH, else Debian's /usr/sbin.
fn pgbouncer_candidates() -> Vec<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("pgbouncer"))
        .collect()
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
