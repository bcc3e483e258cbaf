//! A webhook receiver on 127.0.0.1 that checks every request with the `standardwebhooks`
//! Python package (`webhook_receiver.py` beside this file), so signatures are verified by an
//! implementation of the specification that is not ours; and the settings that point the
//! alerts job at it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use secrecy::SecretString;
use usage_worker::config::{HumanDuration, Settings, WebhookEndpoint};

use super::{FileLock, TestDb};

/// Two signing secrets (32 bytes each), as an operator would generate them.
pub const SECRET_A: &str = "whsec_wvoerPOhKubOpYwMxQYEJZgoK+z6Jatfx3YAkZZTLZk=";
pub const SECRET_B: &str = "whsec_S+J8LNtGW/tmQ+KApOD2XXHsZ2eyIy+korm0i7iaR0w=";

const INSTALL_HINT: &str = "the webhook tests verify requests with the Python package \
     `standardwebhooks`, which they install into target/webhook-venv on first use; that \
     needs python3 with venv (`apt-get install python3-venv`) and the package index, or \
     install it by hand: `python3 -m venv target/webhook-venv && \
     target/webhook-venv/bin/pip install standardwebhooks` (what .ci/run does)";

fn has_package(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import standardwebhooks"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The Python interpreter that has `standardwebhooks`: the venv under `target/` (made and
/// filled here on first use, under a lock other test processes wait on), else `python3`.
/// Panics with the install hint, naming the step that failed, when there is none.
fn python() -> &'static PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
        let venv = target.join("webhook-venv");
        let venv_python = venv.join("bin/python3");
        if has_package(&venv_python) {
            return venv_python;
        }
        if has_package(Path::new("python3")) {
            return PathBuf::from("python3");
        }
        std::fs::create_dir_all(&target).expect("create target/");
        let _lock = FileLock::acquire(&target.join("webhook-venv.lock"));
        if !has_package(&venv_python) {
            let run = |program: &Path, args: &[&str]| {
                let status = Command::new(program).args(args).status();
                assert!(
                    status.as_ref().is_ok_and(|s| s.success()),
                    "{} {}: {status:?}; {INSTALL_HINT}",
                    program.display(),
                    args.join(" ")
                );
            };
            run(
                Path::new("python3"),
                &["-m", "venv", &venv.to_string_lossy()],
            );
            run(
                &venv.join("bin/pip"),
                &["install", "--quiet", "standardwebhooks"],
            );
        }
        assert!(has_package(&venv_python), "{INSTALL_HINT}");
        venv_python
    })
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub id: String,
    pub timestamp: i64,
    pub signature: String,
    pub body: serde_json::Value,
    pub verified: bool,
    /// The status code answered, or `hang`.
    pub answered: String,
}

pub struct Receiver {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Receiver {
    /// Verifies with any of `secrets`; answers `script` (status codes or `hang`) to the
    /// verified requests in turn, then 200.
    pub fn start(secrets: &[&str], script: &[&str]) -> Receiver {
        let dir = tempfile::tempdir().expect("temporary directory");
        let log = dir.path().join("requests.jsonl");
        let mut command = Command::new(python());
        command
            .arg(
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/it/support/webhook_receiver.py"),
            )
            .arg("--log")
            .arg(&log)
            .arg("--script")
            .arg(script.join(","))
            .stdout(Stdio::piped());
        for secret in secrets {
            command.arg("--secret").arg(secret);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("{INSTALL_HINT}: {e}"));
        let mut line = String::new();
        let stdout = child.stdout.take().expect("receiver stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the receiver's port");
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the webhook receiver did not start (printed {line:?})"));
        Receiver {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks/usage?token=t0ps3cret", self.port)
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
                let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
                Request {
                    id: text("id"),
                    timestamp: text("timestamp").parse().unwrap_or(0),
                    signature: text("signature"),
                    body: serde_json::from_str(&text("body")).unwrap_or_default(),
                    verified: v["verified"].as_bool().unwrap_or(false),
                    answered: text("answered"),
                }
            })
            .collect()
    }

    /// The verified requests answered 2xx.
    pub fn accepted(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.verified && r.answered.starts_with('2'))
            .collect()
    }

    /// An endpoint on this receiver, signing with `secrets`, timing out after `timeout`.
    pub fn endpoint(&self, secrets: &[&str], timeout: Duration) -> WebhookEndpoint {
        WebhookEndpoint {
            url: self.url(),
            secret: None,
            secret_file: None,
            secrets: secrets.iter().map(|s| SecretString::from(*s)).collect(),
            secret_files: Vec::new(),
            events: None,
            connect_timeout: HumanDuration(timeout),
            timeout: HumanDuration(timeout),
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Plans `metered` (1,000 tokens a month, thresholds from the settings) and `halves`
/// (1,000 tokens a month, `alert_thresholds = {50,100}`); Ada (1) is on `metered`, Bob (2) on
/// `halves`.
pub fn seed_webhook_users(db: &TestDb) {
    db.execute(
        "INSERT INTO plans (id, name, alert_thresholds) VALUES
             (1, 'metered', NULL), (2, 'halves', '{50,100}');
         INSERT INTO plan_limits (plan_id, metric, period, kind, max_value) VALUES
             (1, 'tokens', 'month', '', 1000), (2, 'tokens', 'month', '', 1000);
         INSERT INTO users (id, email, name, timezone, plan_id) VALUES
             (1, 'ada@example.com', 'Ada', 'Europe/Berlin', 1),
             (2, 'bob@example.com', 'Bob', 'UTC', 2);",
    );
}

/// Sets a user's token total in the open November 2026 period.
pub fn set_november_tokens(db: &TestDb, user: i64, tokens: i64) {
    db.execute(&format!(
        "INSERT INTO usage_periods (user_id, period, period_start, period_end, tokens)
         VALUES ({user}, 'month', '2026-11-01T00:00:00Z', '2026-12-01T00:00:00Z', {tokens})
         ON CONFLICT (user_id, org_id, period, period_start) DO UPDATE SET tokens = EXCLUDED.tokens"
    ));
}

/// Alert thresholds 80, 95 and 100, every endpoint given, email to `log` (nothing sent).
pub fn webhook_settings(settings: &mut Settings, endpoints: Vec<WebhookEndpoint>) {
    settings.alerts.thresholds = [80, 95, 100]
        .into_iter()
        .map(|p: u32| p.try_into().expect("a percentage"))
        .collect();
    settings.alerts.webhooks = endpoints;
    settings.mail.transport = Some(usage_worker::config::MailTransportKind::Log);
}
