//! The systemd notification protocol (`sd_notify`): datagrams such as `READY=1` sent to the
//! socket named by `$NOTIFY_SOCKET`, a path or, with a leading `@`, an abstract-namespace name.
//! A few lines over std's `UnixDatagram`; no library needed.

use std::ffi::OsStr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A connection to the service manager's notification socket.
pub struct Notifier {
    socket: UnixDatagram,
    address: SocketAddr,
    /// `WATCHDOG_USEC` when the watchdog is enabled for this process.
    watchdog: Option<Duration>,
    send_failed: AtomicBool,
}

impl Notifier {
    /// The notifier systemd set up for this process, if any: `$NOTIFY_SOCKET`, and the watchdog
    /// interval from `$WATCHDOG_USEC` when `$WATCHDOG_PID` is unset or names this process.
    pub fn from_env() -> Option<Notifier> {
        let socket = std::env::var_os("NOTIFY_SOCKET")?;
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|usec| usec.trim().parse::<u64>().ok())
            .filter(|&usec| usec > 0)
            .filter(|_| {
                std::env::var("WATCHDOG_PID")
                    .ok()
                    .and_then(|pid| pid.trim().parse::<u32>().ok())
                    .is_none_or(|pid| pid == std::process::id())
            })
            .map(Duration::from_micros);
        match Notifier::new(&socket, watchdog) {
            Ok(notifier) => Some(notifier),
            Err(e) => {
                tracing::warn!(
                    notify_socket = %socket.to_string_lossy(),
                    error = %e,
                    "cannot use NOTIFY_SOCKET; systemd will not hear from this process"
                );
                None
            }
        }
    }

    /// A notifier for `socket`: a filesystem path, or `@name` for the abstract namespace.
    pub fn new(socket: &OsStr, watchdog: Option<Duration>) -> std::io::Result<Notifier> {
        let bytes = socket.as_bytes();
        let address = match bytes.first() {
            Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..])?,
            Some(b'/') => SocketAddr::from_pathname(socket)?,
            _ => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "expected an absolute path or @abstract-name",
                ));
            }
        };
        Ok(Notifier {
            socket: UnixDatagram::unbound()?,
            address,
            watchdog,
            send_failed: AtomicBool::new(false),
        })
    }

    /// The watchdog interval systemd expects pings within, when enabled.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends one notification, e.g. `READY=1` or `STATUS=idle`. A failure is logged once:
    /// the daemon's work never depends on systemd hearing it.
    pub fn send(&self, message: &str) {
        if let Err(e) = self.socket.send_to_addr(message.as_bytes(), &self.address)
            && !self.send_failed.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 256];
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn notifications_reach_a_socket_in_the_abstract_namespace() {
        let name = format!("usage-worker-notify-test-{}", std::process::id());
        let receiver =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let notifier = Notifier::new(OsStr::new(&format!("@{name}")), None).unwrap();
        notifier.send("READY=1");
        assert_eq!(receive(&receiver), "READY=1");
    }

    #[test]
    fn notifications_reach_a_socket_at_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::new(path.as_os_str(), None).unwrap();
        notifier.send("STATUS=idle");
        assert_eq!(receive(&receiver), "STATUS=idle");
    }

    #[test]
    fn a_relative_socket_name_is_refused() {
        assert!(Notifier::new(OsStr::new("notify.sock"), None).is_err());
    }
}
