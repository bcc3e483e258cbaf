//! The daemon as a service: tells systemd how it is doing (`READY=1`, `STATUS=`, `WATCHDOG=1`,
//! `STOPPING=1`), and, when `metrics.listen` is set, answers `GET /healthz` and `GET /metrics`
//! over a minimal HTTP/1.1 responder.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::jobs::{Ctx, JobKind};
use crate::metrics::{self, Metrics};
use crate::notify::Notifier;
use crate::scheduler::daemon::{self, DaemonObserver, HEARTBEAT_EVERY};
use crate::scheduler::outcome::{DaemonError, RunOutcome};

/// The scheduler loop counts as hung when it has not beaten for this long.
const LOOP_STALL: Duration = Duration::from_secs(10);
/// Longest a health or metrics request may take to arrive.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Starting,
    Running,
    Stopping,
}

struct State {
    phase: Phase,
    last_heartbeat: Instant,
    last_watchdog: Option<Instant>,
    last_status: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error(
        "metrics.listen: cannot listen on {address}: {message}; choose a free address or leave metrics.listen empty"
    )]
    Listen { address: String, message: String },
}

/// What the daemon loop reports, passed on to systemd and kept for `/healthz` and `/metrics`.
pub struct ServiceObserver {
    notifier: Option<Notifier>,
    metrics: Metrics,
    state: Mutex<State>,
}

impl ServiceObserver {
    pub fn new(notifier: Option<Notifier>) -> ServiceObserver {
        ServiceObserver {
            notifier,
            metrics: Metrics::new(),
            state: Mutex::new(State {
                phase: Phase::Starting,
                last_heartbeat: Instant::now(),
                last_watchdog: None,
                last_status: String::new(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn notify(&self, message: &str) {
        if let Some(notifier) = &self.notifier {
            notifier.send(message);
        }
    }

    /// Why the scheduler is not healthy, or `None` when its loop runs and beats.
    fn scheduler_problem(&self) -> Option<String> {
        let state = self.state();
        match state.phase {
            Phase::Starting => Some("starting: waiting for the database".into()),
            Phase::Stopping => Some("stopping".into()),
            Phase::Running if state.last_heartbeat.elapsed() > LOOP_STALL => Some(format!(
                "loop stalled: no heartbeat for {}s",
                state.last_heartbeat.elapsed().as_secs()
            )),
            Phase::Running => None,
        }
    }
}

impl DaemonObserver for ServiceObserver {
    fn ready(&self) {
        {
            let mut state = self.state();
            state.phase = Phase::Running;
            state.last_heartbeat = Instant::now();
        }
        self.notify("READY=1");
    }

    /// Pings the watchdog at half its interval: the loop beats every [`HEARTBEAT_EVERY`], so
    /// a ping is due once the next beat could come later than that.
    fn heartbeat(&self) {
        let now = Instant::now();
        let ping = {
            let mut state = self.state();
            state.last_heartbeat = now;
            let due = self
                .notifier
                .as_ref()
                .and_then(Notifier::watchdog)
                .is_some_and(|interval| {
                    state.last_watchdog.is_none_or(|last| {
                        now.duration_since(last) + HEARTBEAT_EVERY >= interval / 2
                    })
                });
            if due {
                state.last_watchdog = Some(now);
            }
            due
        };
        if ping {
            self.notify("WATCHDOG=1");
        }
    }

    fn status(&self, text: &str) {
        let changed = {
            let mut state = self.state();
            let changed = state.last_status != text;
            if changed {
                state.last_status = text.to_string();
            }
            changed
        };
        if changed {
            self.notify(&format!("STATUS={text}"));
        }
    }

    fn stopping(&self) {
        self.state().phase = Phase::Stopping;
        self.notify("STOPPING=1\nSTATUS=stopping: waiting for running jobs");
    }

    fn run_finished(&self, kind: JobKind, outcome: &RunOutcome) {
        self.metrics.record_run(kind, outcome);
    }
}

/// Runs the daemon until `shutdown` completes, notifying systemd when `$NOTIFY_SOCKET` is set
/// and serving `/healthz` and `/metrics` when `metrics.listen` is set.
pub async fn run(ctx: Arc<Ctx>, shutdown: impl Future<Output = ()>) -> Result<(), ServiceError> {
    let observer = Arc::new(ServiceObserver::new(Notifier::from_env()));
    let server = match ctx.settings.metrics.listen_address() {
        Some(address) => {
            let listener = TcpListener::bind(address)
                .await
                .map_err(|e| ServiceError::Listen {
                    address: address.to_string(),
                    message: e.to_string(),
                })?;
            let bound = listener.local_addr().unwrap_or(address);
            tracing::info!(metrics.listen = %bound, "serving /healthz and /metrics");
            Some(tokio::spawn(serve(listener, ctx.clone(), observer.clone())))
        }
        None => None,
    };
    let result = daemon::run_daemon(ctx, observer, shutdown).await;
    if let Some(server) = server {
        server.abort();
    }
    Ok(result?)
}

async fn serve(listener: TcpListener, ctx: Arc<Ctx>, observer: Arc<ServiceObserver>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let ctx = ctx.clone();
                let observer = observer.clone();
                tokio::spawn(async move {
                    if let Err(e) = respond(stream, &ctx, &observer).await {
                        tracing::debug!(error = %e, "metrics connection ended with an error");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept a metrics connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads one request head, answers it, and closes the connection.
async fn respond(
    mut stream: TcpStream,
    ctx: &Arc<Ctx>,
    observer: &Arc<ServiceObserver>,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
    if !matches!(read, Ok(Ok(()))) {
        return Ok(());
    }
    let request_line = String::from_utf8_lossy(&head);
    let mut parts = request_line.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");

    let (code, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/healthz") => health(ctx, observer).await,
        ("GET" | "HEAD", "/metrics") => {
            let sample = sample(ctx).await;
            let alive = observer.scheduler_problem().is_none();
            let skew = ctx.clock.skew_seconds();
            (
                200,
                metrics::CONTENT_TYPE,
                observer.metrics.render(sample.as_ref(), alive, skew),
            )
        }
        ("GET" | "HEAD", _) => (
            404,
            "text/plain; charset=utf-8",
            "not found; try /healthz or /metrics\n".to_string(),
        ),
        _ => (
            405,
            "text/plain; charset=utf-8",
            "only GET is supported\n".to_string(),
        ),
    };
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let mut response = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        response.extend_from_slice(body.as_bytes());
    }
    stream.write_all(&response).await?;
    stream.shutdown().await
}

/// 200 when the database answers and the scheduler loop beats; 503 naming what is wrong.
async fn health(ctx: &Arc<Ctx>, observer: &Arc<ServiceObserver>) -> (u16, &'static str, String) {
    let pool = ctx.pool.clone();
    let database = tokio::task::spawn_blocking(move || -> Result<(), String> {
        use diesel::connection::SimpleConnection;
        let mut conn = pool.get().map_err(|e| e.to_string())?;
        conn.batch_execute("SELECT 1").map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    let scheduler = observer.scheduler_problem();
    let healthy = database.is_ok() && scheduler.is_none();
    let body = format!(
        "{}\ndatabase: {}\nscheduler: {}\n",
        if healthy { "ok" } else { "unhealthy" },
        database.err().unwrap_or_else(|| "ok".into()),
        scheduler.unwrap_or_else(|| "ok".into())
    );
    (
        if healthy { 200 } else { 503 },
        "text/plain; charset=utf-8",
        body,
    )
}

/// The database gauges; the clocks are compared again on the way.
async fn sample(ctx: &Arc<Ctx>) -> Option<metrics::DatabaseSample> {
    let ctx = ctx.clone();
    let sampled = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let mut conn = ctx.pool.get().map_err(|e| e.to_string())?;
        if let Ok(clock) = crate::db::clock::read(&mut conn) {
            ctx.clock.record(clock);
        }
        metrics::sample_database(&mut conn).map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    match sampled {
        Ok(sample) => Some(sample),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot read the database gauges");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixDatagram;

    use super::*;

    fn received(socket: &UnixDatagram) -> Vec<String> {
        socket.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 512];
        let mut messages = Vec::new();
        while let Ok(n) = socket.recv(&mut buf) {
            messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        messages
    }

    fn observer_with_watchdog(
        dir: &std::path::Path,
        watchdog: Duration,
    ) -> (ServiceObserver, UnixDatagram) {
        let path = dir.join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::new(path.as_os_str(), Some(watchdog)).unwrap();
        (ServiceObserver::new(Some(notifier)), socket)
    }

    #[test]
    fn the_watchdog_is_pinged_once_per_half_interval_not_at_every_beat() {
        let dir = tempfile::tempdir().unwrap();
        let (observer, socket) = observer_with_watchdog(dir.path(), Duration::from_secs(60));
        observer.ready();
        for _ in 0..5 {
            observer.heartbeat();
        }
        assert_eq!(received(&socket), ["READY=1", "WATCHDOG=1"]);
    }

    #[test]
    fn a_short_watchdog_is_pinged_at_every_beat() {
        let dir = tempfile::tempdir().unwrap();
        let (observer, socket) = observer_with_watchdog(dir.path(), Duration::from_secs(2));
        observer.heartbeat();
        observer.heartbeat();
        assert_eq!(received(&socket), ["WATCHDOG=1", "WATCHDOG=1"]);
    }

    #[test]
    fn an_unchanged_status_is_sent_once() {
        let dir = tempfile::tempdir().unwrap();
        let (observer, socket) = observer_with_watchdog(dir.path(), Duration::from_secs(60));
        observer.status("idle; next: partitions at 02:00:00Z");
        observer.status("idle; next: partitions at 02:00:00Z");
        observer.status("running partitions");
        assert_eq!(
            received(&socket),
            [
                "STATUS=idle; next: partitions at 02:00:00Z",
                "STATUS=running partitions"
            ]
        );
    }

    #[test]
    fn health_reports_starting_running_and_stopping() {
        let observer = ServiceObserver::new(None);
        assert!(
            observer
                .scheduler_problem()
                .unwrap()
                .starts_with("starting")
        );
        observer.ready();
        assert_eq!(observer.scheduler_problem(), None);
        observer.stopping();
        assert_eq!(observer.scheduler_problem().as_deref(), Some("stopping"));
    }
}
