//! The test's end of systemd's notify protocol: a datagram socket the daemon finds in
//! `$NOTIFY_SOCKET`, and what it sent there.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

/// The test's end of `$NOTIFY_SOCKET`.
pub struct NotifySocket {
    socket: UnixDatagram,
    seen: Vec<String>,
}

impl NotifySocket {
    pub fn bind(path: &Path) -> NotifySocket {
        let socket = UnixDatagram::bind(path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        NotifySocket {
            socket,
            seen: Vec::new(),
        }
    }

    /// Receives until a message has a line equal to `line`; returns the messages received.
    pub fn wait_for(&mut self, line: &str) -> Vec<String> {
        self.wait_for_message(line, |message| message.lines().any(|l| l == line))
    }

    /// Receives until a message satisfies `matches`; returns the messages received. `what`
    /// names the awaited message in the failure.
    pub fn wait_for_message(&mut self, what: &str, matches: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push(message.clone());
                received.push(message.clone());
                if matches(&message) {
                    return received;
                }
            }
        }
        panic!("no `{what}` from the daemon; got {:?}", self.seen);
    }

    /// Every message that arrives within `window`.
    pub fn drain_for(&mut self, window: Duration) -> Vec<String> {
        let end = Instant::now() + window;
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < end {
            if let Ok(n) = self.socket.recv(&mut buf) {
                received.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        received
    }
}
