//! Where users run the daemon: behind a connection pooler (a real PgBouncer), on a host whose
//! clock is off (the binary under faketime), and on a host the network cuts off in the middle
//! of a run (a network namespace whose packets iptables drops).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::TimeDelta;

use crate::service::{get, metrics_address, sample};
use crate::support::books::assert_all_aggregated_exactly;
use crate::support::clock::db_now;
use crate::support::daemon::Daemon;
use crate::support::netns::{NetNs, TcpCluster};
use crate::support::pgbouncer::{PgBouncer, PoolMode};
use crate::support::{self, Out, TestDb, output, schedule_only, wait_until};
use usage_worker::jobs::JobKind;

// ---------------------------------------------------------------------------------------------
// Connection poolers

#[test]
fn behind_a_transaction_mode_pooler_every_entry_point_refuses_with_exit_78_naming_session_mode() {
    let db = TestDb::new();
    for pool_size in [1, 4] {
        let Some(bouncer) = PgBouncer::start(PoolMode::Transaction, pool_size, &["postgres"])
        else {
            return;
        };
        let url = bouncer.url("postgres", None, &db.name);
        // No arguments: the daemon, as the service runs it.
        for args in [
            &[][..],
            &["--run", "aggregate"],
            &["--migrate"],
            &["--status"],
        ] {
            let mut command = support::binary();
            command.env("USAGE_WORKER__DATABASE__URL", &url).args(args);
            let mut daemon = Daemon::start(command);
            daemon.wait_for_exit();
            let (code, log) = daemon.stop();
            assert_eq!(code, 78, "pool {pool_size}, {args:?}:\n{log}");
            for needed in [
                "transaction mode",
                "pool_mode = session",
                "connect directly",
            ] {
                assert!(log.contains(needed), "pool {pool_size}, {args:?}:\n{log}");
            }
        }
    }
    // Nothing was done through it.
    assert_eq!(db.count("SELECT count(*) AS n FROM job_runs"), 0);
}

#[test]
fn behind_a_session_mode_pooler_the_daemon_runs_its_jobs() {
    let db = TestDb::new();
    let Some(bouncer) = PgBouncer::start(PoolMode::Session, 4, &["postgres"]) else {
        return;
    };
    db.execute(
        "INSERT INTO usage_events (user_id, kind, tokens)
         VALUES (1, 'ai_response', 10), (2, 'ai_response', 20)",
    );
    let url = bouncer.url("postgres", None, &db.name);
    let mut command = support::binary();
    command
        .env("USAGE_WORKER__DATABASE__URL", &url)
        .args(["--run", "aggregate"]);
    let out = output(command);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_all_aggregated_exactly(&db);
}

/// psql (simple query protocol, as many drivers in a pooled setup are configured) on `url`:
/// each `-c` a statement of its own.
fn psql(url: &str, statements: &[&str]) -> Out {
    let mut command = Command::new(support::cluster().bin_dir.join("psql"));
    command.args([
        "-X",
        "-q",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-v",
        "VERBOSITY=verbose",
    ]);
    command.args(["-d", url]);
    for statement in statements {
        command.args(["-c", statement]);
    }
    output(command)
}

#[test]
fn through_a_transaction_mode_pooler_the_application_functions_answer_and_a_hard_limit_holds() {
    let db = TestDb::new();
    db.execute(
        "INSERT INTO plans (id, name) VALUES (1, 'free');
         INSERT INTO plan_limits (plan_id, metric, period, kind, max_value, enforcement)
         VALUES (1, 'requests', 'day', 'image_generation', 20, 'hard');
         INSERT INTO users (id, email, timezone, plan_id) VALUES (1, 'ada@example.com', 'UTC', 1);",
    );
    let Some(bouncer) = PgBouncer::start(PoolMode::Transaction, 3, &["postgres"]) else {
        return;
    };
    let url = bouncer.url("postgres", None, &db.name);
    // 40 clients at once through 3 server connections; each call names the schema, since a
    // search_path set in a session does not survive a transaction-mode pooler.
    let record = "SELECT usage.usage_record(p_user_id => 1, p_kind => 'image_generation')";
    let clients: Vec<_> = (0..40)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || psql(&url, &[record]))
        })
        .collect();
    let outs: Vec<Out> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let recorded = outs.iter().filter(|o| o.code == 0).count();
    let refused = outs
        .iter()
        .filter(|o| o.code != 0 && o.stderr.contains("UQ001"))
        .count();
    let other: Vec<&str> = outs
        .iter()
        .filter(|o| o.code != 0 && !o.stderr.contains("UQ001"))
        .map(|o| o.stderr.as_str())
        .collect();
    assert!(other.is_empty(), "{other:?}");
    assert_eq!((recorded, refused), (20, 20));
    assert_eq!(db.count("SELECT count(*) AS n FROM usage_events"), 20);

    // Read-your-writes through the pooler, before any aggregate run.
    let status = psql(
        &url,
        &[
            "SELECT used || '/' || limit_value FROM usage.quota_status(1) \
           WHERE kind = 'image_generation'",
        ],
    );
    assert_eq!(status.stdout.trim(), "20/20", "{}", status.stderr);
    let check = psql(
        &url,
        &[
            "SELECT fits || ' ' || remaining FROM usage.usage_check(p_user_id => 1, \
           p_kind => 'image_generation') WHERE NOT fits",
        ],
    );
    assert_eq!(check.stdout.trim(), "false 0", "{}", check.stderr);
    let summary = psql(
        &url,
        &[
            "SELECT sum(events) FROM usage.usage_summary(1, 'day', current_date - 2, \
           current_date + 2)",
        ],
    );
    assert_eq!(summary.stdout.trim(), "20", "{}", summary.stderr);
}

#[test]
fn through_one_pooled_server_connection_set_config_local_keeps_each_clients_organization_its_own() {
    let roles = crate::org_security::books("pooled");
    let Some(bouncer) = PgBouncer::start(PoolMode::Transaction, 1, &[&roles.reader]) else {
        return;
    };
    let url = bouncer.url(&roles.reader, None, &roles.dbname);
    let org_two = support::count(
        &mut roles.admin(),
        "SELECT count(*) AS n FROM usage.usage_events WHERE org_id = 2",
    )
    .unwrap();
    assert!(org_two > 0);
    let seen = "SELECT pg_backend_pid() || ' ' || count(*) FROM usage.usage_events";
    let last_line = |out: &Out| -> (String, i64) {
        assert_eq!(out.code, 0, "{}", out.stderr);
        let line = out.stdout.lines().last().unwrap_or_default().to_string();
        let (pid, n) = line.split_once(' ').expect("pid and count");
        (pid.to_string(), n.parse().expect("a count"))
    };

    // Client A, as SCHEMA.md says: the organization set for its transaction only.
    let a = psql(
        &url,
        &[
            "BEGIN",
            "SELECT set_config('usage.org_id', '2', true)",
            seen,
            "COMMIT",
        ],
    );
    let (pid_a, seen_a) = last_line(&a);
    assert_eq!(seen_a, org_two, "client A sees its organization's events");
    // Client B, next on the same server connection, sets nothing and sees nothing.
    let (pid_b, seen_b) = last_line(&psql(&url, &[seen]));
    assert_eq!(
        pid_b, pid_a,
        "both clients were served by one server connection"
    );
    assert_eq!(seen_b, 0, "client B saw client A's organization");

    // What the pattern prevents: a plain SET outlives the client on a pooled connection.
    assert_eq!(psql(&url, &["SET usage.org_id = '2'"]).code, 0);
    let (pid_d, seen_d) = last_line(&psql(&url, &[seen]));
    assert_eq!(pid_d, pid_a);
    assert_eq!(
        seen_d, org_two,
        "a session-level SET leaks to the next client of the pooled connection"
    );
}

// ---------------------------------------------------------------------------------------------
// Clocks

/// libfaketime (preloaded, moving the clock of the process it is loaded into), or `None` (saying so)
/// outside CI when it is missing.
fn faketime() -> Option<PathBuf> {
    // The library itself, preloaded into the binary: a `faketime` wrapper process would stay
    // between the test and the daemon, and killing it would leave the daemon running.
    support::installed_tool(
        "libfaketime",
        [
            "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
            "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
            "/usr/lib/faketime/libfaketime.so.1",
            "/usr/local/lib/faketime/libfaketime.so.1",
        ]
        .map(PathBuf::from),
        "install Debian's faketime package",
    )
}

/// This machine's real clock, whatever clock this test runs at (under `scripts/test-at` the
/// tests and their PostgreSQL run at a moved clock).
fn real_now() -> chrono::DateTime<chrono::Utc> {
    let out = Command::new("date")
        .arg("+%s%3N")
        .env_remove("LD_PRELOAD")
        .env_remove("FAKETIME")
        .output()
        .expect("run date");
    let millis: i64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("milliseconds since the epoch");
    chrono::DateTime::from_timestamp_millis(millis).expect("an instant")
}

/// `base` (the binary with its environment) run with its clock `ahead` seconds ahead of the
/// database's (behind when negative), the monotonic clock left alone.
fn with_host_clock(libfaketime: &PathBuf, db: &TestDb, ahead: i64, base: &Command) -> Command {
    // libfaketime's offset is from the real clock; the database's may be moved already.
    let database_offset_ms = (db_now(db) - real_now()).num_milliseconds();
    let offset = (database_offset_ms as f64 / 1000.0).round() as i64 + ahead;
    let mut command = Command::new(base.get_program());
    command.args(base.get_args());
    for (key, value) in base.get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    command
        .env("LD_PRELOAD", libfaketime)
        .env("FAKETIME", format!("{offset:+}"))
        .env("DONT_FAKE_MONOTONIC", "1");
    command
}

/// User `id` (UTC) with a day period from an hour ago that ends `ends_in` from the database's
/// now.
fn day_period_ending_in(db: &TestDb, id: i64, ends_in: TimeDelta) {
    let now = db_now(db);
    db.add_user(id, "UTC");
    db.execute(&format!(
        "INSERT INTO usage_periods (user_id, org_id, period, period_start, period_end)
         VALUES ({id}, 0, 'day', '{}', '{}')",
        (now - TimeDelta::hours(1)).to_rfc3339(),
        (now + ends_in).to_rfc3339()
    ));
}

fn closed_periods_of(db: &TestDb, id: i64) -> i64 {
    db.count(&format!(
        "SELECT count(*) AS n FROM usage_periods WHERE user_id = {id} AND closed_at IS NOT NULL"
    ))
}

#[test]
fn with_the_host_clock_two_minutes_ahead_reset_daily_closes_only_what_ended_by_the_databases_clock()
{
    let Some(libfaketime) = faketime() else {
        return;
    };
    let db = TestDb::new();
    // User 1's day ends in a minute by the database's clock, already by this host's; user 2's
    // ended a minute ago by both.
    day_period_ending_in(&db, 1, TimeDelta::seconds(60));
    day_period_ending_in(&db, 2, TimeDelta::seconds(-60));
    let mut base = db.binary();
    base.args(["--run", "reset-daily"]);
    let out = output(with_host_clock(&libfaketime, &db, 120, &base));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(closed_periods_of(&db, 1), 0, "closed before it ended");
    assert_eq!(closed_periods_of(&db, 2), 1);
    let closed_in_the_future =
        db.count("SELECT count(*) AS n FROM usage_periods WHERE closed_at > clock_timestamp()");
    assert_eq!(closed_in_the_future, 0);
    assert!(
        out.stderr.contains("ahead of the database"),
        "no warning about the clocks:\n{}",
        out.stderr
    );
}

#[test]
fn with_the_host_clock_ten_minutes_off_the_irreversible_jobs_refuse_and_status_shows_the_skew() {
    let Some(libfaketime) = faketime() else {
        return;
    };
    let db = TestDb::new();
    day_period_ending_in(&db, 2, TimeDelta::seconds(-60));
    db.execute("INSERT INTO usage_events (user_id, kind, tokens) VALUES (2, 'ai_response', 5)");
    for offset in [600, -600] {
        for job in ["reset-daily", "reset-monthly", "alerts", "retention"] {
            let mut base = db.binary();
            base.args(["--run", job]);
            let out = output(with_host_clock(&libfaketime, &db, offset, &base));
            assert_eq!(
                out.code, 1,
                "{offset} {job}: {}\n{}",
                out.stdout, out.stderr
            );
            let all = format!("{}{}", out.stdout, out.stderr);
            assert!(all.contains("refuses to run"), "{offset} {job}: {all}");
        }
    }
    assert_eq!(
        closed_periods_of(&db, 2),
        0,
        "a refused reset closed a period"
    );
    let mut base = db.binary();
    base.args(["--run", "aggregate"]);
    let out = output(with_host_clock(&libfaketime, &db, 600, &base));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_all_aggregated_exactly(&db);
    let mut base = db.binary();
    base.arg("--status");
    let out = output(with_host_clock(&libfaketime, &db, 600, &base));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let clock_line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("clock:"))
        .unwrap_or_else(|| panic!("no clock line:\n{}", out.stdout));
    assert!(
        clock_line.contains("ahead of the database") && clock_line.contains("refuse"),
        "{clock_line}"
    );
}

#[test]
fn a_daemon_whose_host_clock_runs_two_minutes_ahead_exports_the_skew_and_warns() {
    let Some(libfaketime) = faketime() else {
        return;
    };
    let db = TestDb::new();
    let mut base = support::daemon_command(&db.url);
    base.env("USAGE_WORKER__METRICS__LISTEN", "127.0.0.1:0");
    let mut daemon = Daemon::start(with_host_clock(&libfaketime, &db, 120, &base));
    // The listener is logged before the skew warning.
    let address = metrics_address(&mut daemon);
    let warning = daemon.wait_for_line("ahead of the database");
    assert!(warning.contains("WARN"), "{warning}");
    let (code, metrics) = get(&address, "/metrics");
    assert_eq!(code, 200, "{metrics}");
    let skew = sample(&metrics, "usage_worker_clock_skew_seconds")
        .unwrap_or_else(|| panic!("no skew gauge:\n{metrics}"));
    assert!((-125.0..=-115.0).contains(&skew), "skew {skew}");
}

// ---------------------------------------------------------------------------------------------
// Partitions

/// Runs of `aggregate` that succeeded, by the process `pid`.
fn succeeded_runs_of(db: &TestDb, pid: u32) -> i64 {
    db.count(&format!(
        "SELECT count(*) AS n FROM job_runs
          WHERE job = 'aggregate' AND status = 'succeeded' AND pid = {pid}"
    ))
}

#[test]
fn a_daemon_cut_off_mid_run_lets_the_other_take_over_within_90_s_and_the_books_stay_exact() {
    let Some(ns) = NetNs::create() else { return };
    let cluster = TcpCluster::start(&ns.host_ip);
    let db = cluster.test_db();
    db.execute(
        "INSERT INTO usage_events (user_id, kind, tokens)
         SELECT g % 50, 'ai_response', g FROM generate_series(1, 5000) g",
    );
    // Daemon B, on the other "host": its aggregate run waits for this lock mid-run.
    let mut blocker = db.conn();
    diesel::connection::SimpleConnection::batch_execute(
        &mut blocker,
        "BEGIN; LOCK TABLE token_usage_daily IN ACCESS EXCLUSIVE MODE;",
    )
    .expect("lock token_usage_daily");
    let mut b_command = ns.command(&PathBuf::from(env!("CARGO_BIN_EXE_usage-worker")));
    b_command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("USAGE_WORKER__DATABASE__URL", cluster.tcp_url("uw"))
        .env("USAGE_WORKER__LOG__LEVEL", "info");
    schedule_only(&mut b_command, JobKind::Aggregate, "*/2 * * * * *");
    let mut b = Daemon::start(b_command);
    b.wait_for_line("job started");
    let waiting = "SELECT count(*) AS n FROM pg_stat_activity
                    WHERE client_addr IS NOT NULL AND wait_event_type = 'Lock'";
    assert_eq!(db.wait_for_count(waiting, 1, Duration::from_secs(30)), 1);

    // The cut, then the lock goes: B's session can finish its statement but hears nothing more.
    ns.cut();
    let cut_at = Instant::now();
    drop(blocker);

    // Daemon A, on this host, takes over.
    let mut a_command = support::binary();
    a_command.env("USAGE_WORKER__DATABASE__URL", &db.url);
    schedule_only(&mut a_command, JobKind::Aggregate, "*/2 * * * * *");
    let a = Daemon::start(a_command);
    let a_pid = a.pid();
    let took_over = wait_until(Duration::from_secs(90), || {
        succeeded_runs_of(&db, a_pid) > 0
    });
    let after = cut_at.elapsed();
    assert!(
        took_over,
        "daemon A did not aggregate within 90 s of the cut"
    );
    eprintln!(
        "daemon A took over {:.1} s after the cut",
        after.as_secs_f64()
    );
    // The server ended every session of the silent host within 60 s.
    let sessions = "SELECT count(*) AS n FROM pg_stat_activity WHERE client_addr IS NOT NULL";
    let gone = wait_until(
        Duration::from_secs(60).saturating_sub(cut_at.elapsed()),
        || db.count(sessions) == 0,
    );
    assert!(
        gone,
        "the cut-off daemon's sessions outlived 60 s of silence"
    );

    // More events: A counts them; every event counted once.
    db.execute("INSERT INTO usage_events (user_id, kind, tokens) VALUES (7, 'ai_response', 70)");
    let runs = succeeded_runs_of(&db, a_pid);
    assert!(wait_until(Duration::from_secs(30), || succeeded_runs_of(
        &db, a_pid
    ) > runs + 1));
    assert_all_aggregated_exactly(&db);

    // B's run ended itself instead of waiting forever.
    let b_ended = wait_until(Duration::from_secs(60), || {
        !b.is_running() || b_has_logged_a_failure(&mut b)
    });
    assert!(b_ended, "the cut-off daemon's run never ended");
    drop(a);
}

fn b_has_logged_a_failure(b: &mut Daemon) -> bool {
    b.has_logged("job lost the database") || b.has_logged("job failed")
}

// ---------------------------------------------------------------------------------------------
// Failover

#[test]
fn a_lost_connection_or_a_read_only_server_is_a_lost_database_and_any_other_error_is_not() {
    use diesel::connection::SimpleConnection;
    use usage_worker::jobs::JobError;
    let db = TestDb::new();
    // 25006: what a former primary answers once it has become a standby.
    let mut read_only = db.conn();
    read_only
        .batch_execute("SET default_transaction_read_only = on")
        .unwrap();
    let error = JobError::from(
        read_only
            .batch_execute("INSERT INTO plans (id, name) VALUES (9, 'x')")
            .unwrap_err(),
    );
    assert!(error.lost_database(), "{error}");
    // A session the server ended (a restart, a failover, a network cut).
    let mut ended = db.conn();
    db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND pid <> pg_backend_pid()",
    );
    let error = JobError::from(ended.batch_execute("SELECT 1").unwrap_err());
    assert!(error.lost_database(), "{error}");
    // A job's own error is a failure.
    let mut conn = db.conn();
    conn.batch_execute("INSERT INTO plans (id, name) VALUES (9, 'x')")
        .unwrap();
    let error = JobError::from(
        conn.batch_execute("INSERT INTO plans (id, name) VALUES (9, 'x')")
            .unwrap_err(),
    );
    assert!(!error.lost_database(), "{error}");
}

#[test]
fn a_run_that_loses_its_database_is_recorded_abandoned_and_repeated_for_the_same_tick() {
    let db = TestDb::new();
    let blocker = db.block_partitions_job();
    // Hourly: the tick of this hour is caught up at start, and no other tick comes.
    let mut command = support::binary();
    command.env("USAGE_WORKER__DATABASE__URL", &db.url);
    schedule_only(&mut command, JobKind::Partitions, "0 0 * * * *");
    let mut daemon = Daemon::start(command);
    let waiting = "SELECT count(*) AS n FROM pg_stat_activity
                    WHERE datname = current_database() AND wait_event_type = 'Lock'";
    assert_eq!(db.wait_for_count(waiting, 1, Duration::from_secs(30)), 1);
    // The run's session ends under it, as in a failover.
    db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND wait_event_type = 'Lock'",
    );
    daemon.wait_for_line("job lost the database");
    drop(blocker);
    daemon.wait_for_line("repeating the run that lost its database");
    daemon.wait_for_line("job succeeded");
    let repeated = db.count(
        "SELECT count(*) AS n FROM job_runs lost JOIN job_runs ok USING (job, scheduled_for)
          WHERE lost.status = 'abandoned' AND lost.error LIKE 'lost the database%'
            AND ok.status = 'succeeded' AND ok.id > lost.id",
    );
    assert_eq!(repeated, 1);
    assert_eq!(
        db.count("SELECT count(*) AS n FROM job_runs WHERE status = 'failed'"),
        0,
        "a lost database was counted as the job's failure"
    );
    let (code, _) = daemon.stop();
    assert_eq!(code, 0);
}

/// Inserts one 25-token event after another through `url` (both HA nodes) until `stop`,
/// reconnecting whenever the primary goes away; returns how many inserts were acknowledged.
fn steady_writer(
    url: String,
    users: i64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<i64> {
    use diesel::connection::SimpleConnection;
    use std::sync::atomic::Ordering;
    std::thread::spawn(move || {
        let mut acknowledged = 0;
        let mut conn = None;
        let mut i: i64 = 0;
        while !stop.load(Ordering::Relaxed) {
            let Some(c) = conn.as_mut() else {
                conn = usage_worker::db::connect(&url).ok();
                if conn.is_none() {
                    std::thread::sleep(Duration::from_millis(200));
                }
                continue;
            };
            let user = i % users + 1;
            let sql = format!(
                "INSERT INTO usage.usage_events (user_id, kind, tokens) VALUES ({user}, 'ai_response', 25)"
            );
            match c.batch_execute(&sql) {
                Ok(()) => {
                    acknowledged += 1;
                    i += 1;
                }
                Err(_) => conn = None,
            }
        }
        acknowledged
    })
}

#[test]
#[ignore = "starts a pg_auto_failover monitor and two nodes and fails over (about 1 to 2 minutes); \
            run with `cargo test --test it -- --ignored topologies::on_pg_auto_failover`"]
fn on_pg_auto_failover_a_failover_mid_aggregation_and_delivery_loses_doubles_and_resends_nothing() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let Some(ha) = crate::support::autofailover::AutoFailover::start("uw") else {
        return;
    };
    let db = ha.test_db("uw");
    let zone = crate::support::clock::zone_at_local_noon(&db);
    let users = 40;
    db.execute(&format!(
        "INSERT INTO plans (id, name) VALUES (1, 'free');
         INSERT INTO plan_limits (plan_id, metric, period, kind, max_value)
         VALUES (1, 'tokens', 'day', '', 4000);
         INSERT INTO users (id, email, timezone, plan_id)
         SELECT g, 'user' || g || '@example.com', '{zone}', 1 FROM generate_series(1, {users}) g;"
    ));
    let smtp = crate::support::smtp::SmtpServer::start();
    let mut command = support::binary();
    command.env("USAGE_WORKER__DATABASE__URL", ha.url("uw"));
    smtp.configure_env(&mut command);
    for &kind in JobKind::ALL {
        let every_second = matches!(kind, JobKind::Aggregate | JobKind::Alerts);
        command.env(
            support::schedule_key(kind),
            if every_second { "* * * * * *" } else { "" },
        );
    }
    let daemon = Daemon::start(command);

    // Events arrive all along; the failover comes while the quotas cross 80 % and 95 %.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = steady_writer(ha.url("uw"), users, stop.clone());
    let crossing = format!(
        "SELECT CASE WHEN coalesce(sum(tokens), 0) >= {} THEN 1 ELSE 0 END::bigint AS n
           FROM usage_events",
        users * 4000 * 70 / 100
    );
    let _ = db.wait_for_count(&crossing, 1, Duration::from_secs(120));
    let failover_started = Instant::now();
    ha.failover();
    eprintln!(
        "failover took {:.1} s",
        failover_started.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    let acknowledged = writer.join().unwrap();

    // The daemon goes on on the new primary and catches up with every event.
    let caught_up = wait_until(Duration::from_secs(90), || {
        crate::support::books::events_not_yet_aggregated(&db) == 0
            && db.count(
                "SELECT count(*) AS n FROM quota_alerts WHERE status NOT IN ('sent', 'superseded')",
            ) == 0
    });
    assert!(caught_up, "the daemon did not catch up on the new primary");
    let (code, log) = daemon.stop();
    assert_eq!(code, 0, "{log}");
    assert_all_aggregated_exactly(&db);
    let events = db.count("SELECT count(*) AS n FROM usage_events");
    assert!(
        events >= acknowledged,
        "acknowledged events were lost: {events} < {acknowledged}"
    );

    // Every threshold reached was decided once; what was sent arrived once.
    let reached = db.count(
        "SELECT count(*) AS n FROM (SELECT user_id, sum(tokens) AS used FROM usage_events
           GROUP BY user_id) u CROSS JOIN (VALUES (80), (95)) t(threshold)
          WHERE u.used * 100 >= 4000 * t.threshold",
    );
    assert!(reached > 0, "no threshold was reached");
    assert_eq!(db.count("SELECT count(*) AS n FROM quota_alerts"), reached);
    let top_sent = db.count(
        "SELECT count(*) AS n FROM quota_alerts a WHERE status = 'sent' AND threshold = (
           SELECT max(threshold) FROM quota_alerts b WHERE b.user_id = a.user_id)",
    );
    assert_eq!(
        top_sent,
        db.count("SELECT count(DISTINCT user_id) AS n FROM quota_alerts"),
        "each user's highest alert was sent"
    );
    let sent = db.count("SELECT count(*) AS n FROM quota_alerts WHERE status = 'sent'");
    let received = smtp.received();
    let mut message_ids: Vec<String> = received.iter().map(|m| m.message_id()).collect();
    message_ids.sort();
    message_ids.dedup();
    assert_eq!(
        (received.len(), message_ids.len()),
        (sent as usize, sent as usize),
        "emails received and distinct Message-IDs against alerts sent"
    );
    let failed = db.count(
        "SELECT count(*) AS n FROM job_runs WHERE job IN ('aggregate', 'alerts') AND status = 'failed'",
    );
    assert_eq!(
        failed, 0,
        "the failover was counted as a job's failure:\n{log}"
    );
}
