//! A private PostgreSQL cluster started from the system's server binaries: used by `--demo`,
//! the tests and the benchmarks.
//!
//! The cluster listens only on a unix socket inside its data directory. PostgreSQL refuses to
//! run as root, so when the effective uid is 0 every server command runs as the `postgres`
//! system user.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The unix socket path must fit in `sockaddr_un.sun_path` (108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;
const SOCKET_NAME: &str = ".s.PGSQL.5432";

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "no PostgreSQL server binaries found (looked in embedded.pg_bin_dir, `pg_config --bindir`, \
         PATH and /usr/lib/postgresql/*/bin); install them (e.g. `apt-get install postgresql`) \
         or set embedded.pg_bin_dir"
    )]
    BinariesNotFound,
    #[error(
        "running as root, PostgreSQL must run as the `postgres` system user, which does not exist; \
         create it (e.g. `useradd --system postgres`) or run as an ordinary user"
    )]
    NoPostgresUser,
    #[error(
        "data directory {0} gives a socket path longer than 107 bytes; set embedded.data_dir to a shorter path"
    )]
    PathTooLong(PathBuf),
    #[error("{action} failed for the cluster in {dir}: {message}")]
    Command {
        action: &'static str,
        dir: PathBuf,
        message: String,
    },
    #[error("cannot prepare data directory {dir}: {source}")]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// How the cluster is tuned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// PostgreSQL's defaults.
    Durable,
    /// fsync and synchronous commit off: for tests and benchmarks, where the data is thrown away.
    Throwaway,
}

/// A running private cluster. Dropping it stops the cluster if this process started it.
#[derive(Debug)]
pub struct EmbeddedPg {
    data_dir: PathBuf,
    bin_dir: PathBuf,
    as_postgres_user: bool,
    started_here: bool,
}

impl EmbeddedPg {
    /// Initialises the data directory if needed (reusing an existing cluster) and starts the
    /// server unless it is already running.
    pub fn start(
        data_dir: &Path,
        bin_dir_override: Option<&Path>,
        durability: Durability,
    ) -> Result<EmbeddedPg, EmbeddedError> {
        let bin_dir = find_bin_dir(bin_dir_override)?;
        let as_postgres_user = effective_uid_is_root();
        if as_postgres_user && !postgres_user_exists() {
            return Err(EmbeddedError::NoPostgresUser);
        }
        let data_dir = absolute(data_dir)?;
        if data_dir.join(SOCKET_NAME).as_os_str().len() > MAX_SOCKET_PATH {
            return Err(EmbeddedError::PathTooLong(data_dir));
        }
        let mut pg = EmbeddedPg {
            data_dir,
            bin_dir,
            as_postgres_user,
            started_here: false,
        };
        if !pg.data_dir.join("PG_VERSION").exists() {
            pg.init(durability)?;
        }
        if !pg.is_running() {
            pg.run_server_command(
                "pg_ctl start",
                "pg_ctl",
                &[
                    "start".as_ref(),
                    "-D".as_ref(),
                    pg.data_dir.as_os_str(),
                    "-w".as_ref(),
                    "-t".as_ref(),
                    "60".as_ref(),
                    "-l".as_ref(),
                    pg.data_dir.join("server.log").as_os_str(),
                ],
            )?;
            pg.started_here = true;
        }
        Ok(pg)
    }

    /// A libpq URL for a database in this cluster, as the `postgres` superuser.
    pub fn url(&self, dbname: &str) -> String {
        format!(
            "postgres://postgres@/{dbname}?host={}",
            self.data_dir.display()
        )
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// Whether this process started the server (and will stop it when dropped).
    pub fn started_here(&self) -> bool {
        self.started_here
    }

    /// Leaves the server running after this value is dropped.
    pub fn keep_running(&mut self) {
        self.started_here = false;
    }

    pub fn is_running(&self) -> bool {
        self.server_command(
            "pg_ctl",
            &["status".as_ref(), "-D".as_ref(), self.data_dir.as_os_str()],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
    }

    /// Stops the server (fast shutdown: sessions are disconnected, work rolled back).
    pub fn stop(&self) -> Result<(), EmbeddedError> {
        self.run_server_command(
            "pg_ctl stop",
            "pg_ctl",
            &[
                "stop".as_ref(),
                "-D".as_ref(),
                self.data_dir.as_os_str(),
                "-m".as_ref(),
                "fast".as_ref(),
                "-w".as_ref(),
            ],
        )
    }

    /// Starts a detached watcher that stops the cluster and deletes its data directory once
    /// process `owner` has exited: test clusters shared by many test processes end with the
    /// test run that started them.
    pub fn stop_and_remove_when_gone(&self, owner: u32) -> Result<(), EmbeddedError> {
        let pg_ctl = self.bin_dir.join("pg_ctl");
        let runner = if self.as_postgres_user {
            runuser_prefix().join(" ")
        } else {
            String::new()
        };
        let script = format!(
            "while kill -0 {owner} 2>/dev/null; do sleep 1; done; \
             {runner} '{pg_ctl}' stop -D '{data}' -m immediate >/dev/null 2>&1; rm -rf '{data}' '{data}.lock'",
            pg_ctl = pg_ctl.display(),
            data = self.data_dir.display(),
        );
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        detach(&mut command);
        command.spawn().map_err(|e| EmbeddedError::Command {
            action: "starting the cluster watcher",
            dir: self.data_dir.clone(),
            message: e.to_string(),
        })?;
        Ok(())
    }

    fn init(&self, durability: Durability) -> Result<(), EmbeddedError> {
        let io = |source| EmbeddedError::Io {
            dir: self.data_dir.clone(),
            source,
        };
        std::fs::create_dir_all(&self.data_dir).map_err(io)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&self.data_dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io)?;
        }
        if self.as_postgres_user {
            let status = Command::new("chown")
                .arg("postgres:")
                .arg(&self.data_dir)
                .status()
                .map_err(io)?;
            if !status.success() {
                return Err(EmbeddedError::Command {
                    action: "chown to postgres",
                    dir: self.data_dir.clone(),
                    message: format!("chown exited with {status}"),
                });
            }
        }
        self.run_server_command(
            "initdb",
            "initdb",
            &[
                "-D".as_ref(),
                self.data_dir.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "-A".as_ref(),
                "trust".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--locale=C".as_ref(),
                "--no-sync".as_ref(),
            ],
        )?;
        let mut settings = format!(
            "\n# usage-worker private cluster\nlisten_addresses = ''\n\
             unix_socket_directories = '{}'\nmax_connections = 200\n\
             timezone = 'UTC'\nlog_timezone = 'UTC'\n",
            self.data_dir.display()
        );
        if durability == Durability::Throwaway {
            settings.push_str(
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
                 shared_buffers = 256MB\nmax_wal_size = 4GB\n",
            );
        }
        let conf = self.data_dir.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).map_err(io)?;
        text.push_str(&settings);
        std::fs::write(&conf, text).map_err(io)?;
        Ok(())
    }

    fn server_command(&self, program: &str, args: &[&std::ffi::OsStr]) -> Command {
        let binary = self.bin_dir.join(program);
        let mut command = if self.as_postgres_user {
            let prefix = runuser_prefix();
            let mut c = Command::new(prefix[0]);
            c.args(&prefix[1..]);
            c.arg(&binary);
            c
        } else {
            Command::new(&binary)
        };
        command.args(args).stdin(Stdio::null());
        // Its own session: a Ctrl-C in the terminal stops the daemon, which then stops the
        // server in order, instead of the server dying under a running job.
        detach(&mut command);
        command
    }

    fn run_server_command(
        &self,
        action: &'static str,
        program: &str,
        args: &[&std::ffi::OsStr],
    ) -> Result<(), EmbeddedError> {
        let output = self
            .server_command(program, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| EmbeddedError::Command {
                action,
                dir: self.data_dir.clone(),
                message: e.to_string(),
            })?;
        if output.status.success() {
            return Ok(());
        }
        let mut message = String::from_utf8_lossy(&output.stderr).trim().to_string();
        if message.is_empty() {
            message = String::from_utf8_lossy(&output.stdout).trim().to_string();
        }
        let log = self.data_dir.join("server.log");
        if action == "pg_ctl start" && log.exists() {
            message.push_str(&format!(" (server log: {})", log.display()));
        }
        Err(EmbeddedError::Command {
            action,
            dir: self.data_dir.clone(),
            message,
        })
    }
}

impl Drop for EmbeddedPg {
    fn drop(&mut self) {
        if self.started_here
            && let Err(e) = self.stop()
        {
            tracing::warn!(error = %e, "could not stop the private PostgreSQL cluster");
        }
    }
}

/// Finds the PostgreSQL server binaries: the override, `pg_config --bindir`, PATH, then
/// `/usr/lib/postgresql/*/bin` (newest version first).
pub fn find_bin_dir(override_dir: Option<&Path>) -> Result<PathBuf, EmbeddedError> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = override_dir {
        return if has_server(dir) {
            Ok(dir.to_path_buf())
        } else {
            Err(EmbeddedError::BinariesNotFound)
        };
    }
    let mut candidates = Vec::new();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        candidates.push(PathBuf::from(
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        ));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versioned.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    candidates.extend(versioned.into_iter().map(|(_, dir)| dir));
    candidates.push(PathBuf::from("/usr/local/pgsql/bin"));
    candidates
        .into_iter()
        .find(|dir| has_server(dir))
        .ok_or(EmbeddedError::BinariesNotFound)
}

pub fn effective_uid_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn postgres_user_exists() -> bool {
    Command::new("id")
        .arg("-u")
        .arg("postgres")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The command prefix that runs a program as the `postgres` user.
fn runuser_prefix() -> Vec<&'static str> {
    if Path::new("/usr/sbin/runuser").exists() || Path::new("/sbin/runuser").exists() {
        vec!["runuser", "-u", "postgres", "--"]
    } else {
        vec![
            "setpriv",
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ]
    }
}

fn absolute(path: &Path) -> Result<PathBuf, EmbeddedError> {
    std::path::absolute(path).map_err(|source| EmbeddedError::Io {
        dir: path.to_path_buf(),
        source,
    })
}

/// Puts the child in its own session, so a terminal's Ctrl-C does not reach it.
fn detach(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid, close_range and fcntl are async-signal-safe and touch no memory of the
    // parent.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            close_inherited_descriptors_on_exec();
            Ok(())
        });
    }
}

/// Marks every descriptor above standard error close-on-exec. The server outlives this
/// process, and a pipe it inherited by accident (a test runner's, a wrapper's such as
/// `faketime`, which waits for its write end to close) would keep whoever reads it waiting
/// for as long as the server runs. Async-signal-safe: called between fork and exec.
fn close_inherited_descriptors_on_exec() {
    // SAFETY: plain system calls on descriptor numbers; none of them touches memory.
    unsafe {
        if libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        ) == 0
        {
            return;
        }
        // Kernels before 5.11: one descriptor at a time, up to the usual limit.
        for fd in 3..4096 {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}
