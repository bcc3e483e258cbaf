//! Webhook delivery benchmark: USERS users (20,000 by default), each past 80 % of a monthly
//! token limit, so the alerts job decides one alert each; with `alerts.channels = ["webhook"]`
//! and one endpoint, the job then delivers every one to a receiver on 127.0.0.1 that reads
//! each request and answers `204 No Content` at once (HTTP/1.1, keep-alive, a thread per
//! connection). Reports deliveries per second (target ≥ 500) with the default settings.
//!
//! `cargo bench --bench webhooks` (USERS=5000 for a quick look).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel::connection::SimpleConnection;
use secrecy::SecretString;
use serde_json::json;
use usage_worker::config::{AlertChannel, HumanDuration, Settings, WebhookEndpoint};
use usage_worker::embedded_pg::Durability;
use usage_worker::jobs::{Ctx, JobKind, RunOpts, alerts};

const MONTH_START: &str = "2026-11-01T00:00:00Z";
const MONTH_END: &str = "2026-12-01T00:00:00Z";
const NOW: &str = "2026-11-20T12:00:00Z";
const SECRET: &str = "whsec_wvoerPOhKubOpYwMxQYEJZgoK+z6Jatfx3YAkZZTLZk=";

fn main() {
    let users = common::env_number("USERS", 20_000);
    let mut cluster = common::BenchCluster::start(Durability::Throwaway);
    let mut conn = cluster.migrated_database("bench");
    let url = cluster.pg.url("bench");
    conn.batch_execute(&format!(
        "INSERT INTO plans (id, name) VALUES (1, 'free');
         INSERT INTO plan_limits (plan_id, metric, period, kind, max_value)
         VALUES (1, 'tokens', 'month', '', 1000);
         INSERT INTO users (id, email, name, plan_id)
         SELECT g, 'user' || g || '@example.com', 'User ' || g, 1 FROM generate_series(1, {users}) g;
         INSERT INTO usage_periods (user_id, period, period_start, period_end, requests, tokens)
         SELECT g, 'month', '{MONTH_START}', '{MONTH_END}', 10, 850 FROM generate_series(1, {users}) g;"
    ))
    .expect("load data");
    conn.batch_execute("VACUUM ANALYZE").expect("vacuum");

    let receiver = Receiver::start();
    let mut settings = Settings::default();
    settings.database.url = url.clone();
    settings.alerts.channels = Some(vec![AlertChannel::Webhook]);
    settings.alerts.webhooks = vec![WebhookEndpoint {
        url: format!("http://127.0.0.1:{}/hooks/usage", receiver.port),
        secret: Some(SecretString::from(SECRET.to_string())),
        secret_file: None,
        secrets: Vec::new(),
        secret_files: Vec::new(),
        events: None,
        connect_timeout: HumanDuration(Duration::from_secs(5)),
        timeout: HumanDuration(Duration::from_secs(10)),
    }];
    let ctx = Ctx::new(Arc::new(settings), url);
    let now: DateTime<Utc> = NOW.parse().expect("instant");

    alerts::decide(&ctx, &mut conn, now, None).expect("decide");
    let started = Instant::now();
    let report = JobKind::Alerts
        .run(&ctx, &mut conn, now, &RunOpts::default())
        .expect("deliver");
    let seconds = started.elapsed().as_secs_f64();
    let delivered = report.details["webhooks"]["delivered"]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(delivered, users as u64, "{}", report.summary);
    assert_eq!(receiver.answered.load(Ordering::Relaxed), delivered);
    println!(
        "{}",
        json!({
            "scenario": "deliver_webhooks", "deliveries": delivered, "seconds": common::round(seconds),
            "deliveries_per_second": common::round(delivered as f64 / seconds),
            "batch_size": ctx.settings.alerts.batch_size,
            "target_deliveries_per_second_at_least": 500,
        })
    );
}

/// An HTTP/1.1 receiver that answers every request `204` as soon as its body is read.
struct Receiver {
    port: u16,
    answered: Arc<AtomicU64>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let answered = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&answered);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || serve(stream, &counter));
            }
        });
        Receiver { port, answered }
    }
}

/// Answers the requests of one connection until the client closes it.
fn serve(stream: TcpStream, answered: &AtomicU64) {
    let _ = stream.set_nodelay(true);
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        // The request line and headers, up to the empty line.
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if writer
            .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
        answered.fetch_add(1, Ordering::Relaxed);
    }
}
