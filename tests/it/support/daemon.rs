//! The real binary as a long-running child process: its stderr is read line by line as it
//! comes (so the pipe never fills up), and it is stopped with SIGTERM like systemd does.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a daemon may take to log an expected line or to exit.
const PATIENCE: Duration = Duration::from_secs(60);

pub struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every stderr line received so far.
    log: Vec<String>,
}

impl Daemon {
    /// Spawns `command` with stdout discarded and stderr collected.
    pub fn start(mut command: Command) -> Daemon {
        command.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("start usage-worker");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Daemon {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Waits for a stderr line containing `needle` and returns it.
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        self.wait_for_lines(needle, 1)
            .pop()
            .unwrap_or_else(|| panic!("the daemon never logged `{needle}`"))
    }

    /// Waits until `count` stderr lines from now on contain `needle`; returns them.
    pub fn wait_for_lines(&mut self, needle: &str, count: usize) -> Vec<String> {
        let deadline = Instant::now() + PATIENCE;
        let mut found = Vec::new();
        while found.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if line.contains(needle) {
                        found.push(line.clone());
                    }
                    self.log.push(line);
                }
                Err(_) => panic!(
                    "the daemon logged `{needle}` {} time(s), not {count}; its log:\n{}",
                    found.len(),
                    self.log.join("\n")
                ),
            }
        }
        found
    }

    /// The process id (a process started through `ip netns exec` keeps it: ip execs).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether a stderr line received so far contains `needle`; does not wait.
    pub fn has_logged(&mut self, needle: &str) -> bool {
        self.log.extend(self.lines.try_iter());
        self.log.iter().any(|l| l.contains(needle))
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .try_wait()
            .expect("query the daemon's status")
            .is_none()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    /// Waits for the process to exit and returns its exit code (-1 for a signal).
    pub fn wait_for_exit(&mut self) -> i32 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("query the daemon's status") {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "the daemon did not exit");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then waits for the exit; returns the exit code and the whole stderr log.
    pub fn stop(mut self) -> (i32, String) {
        self.terminate();
        let code = self.wait_for_exit();
        // The process is gone, so the reader thread ends at the end of the pipe.
        self.log.extend(self.lines.iter());
        (code, self.log.join("\n"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
