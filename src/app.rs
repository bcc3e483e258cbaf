//! What the binary does for each set of flags. `main.rs` only maps the result to an exit code.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use chrono::Utc;

use crate::cli::Cli;
use crate::config::{ConfigError, MailTransportKind, Settings, default_demo_dir};
use crate::db::{self, DbError};
use crate::demo::{self, DemoError};
use crate::embedded_pg::EmbeddedPg;
use crate::export::{ExportError, write_daily_csv};
use crate::jobs::{self, Ctx, JobKind, RunOpts};
use crate::ledger::{self, Identity, Trigger};
use crate::mail::templates::Templates;
use crate::quota_report;
use crate::scheduler::outcome::{DaemonError, RunOutcome, RunRequest};
use crate::scheduler::{catchup, runner};
use crate::service::ServiceError;
use crate::subject::Subject;

mod status;

/// Exit codes (sysexits.h where one fits).
pub mod exit {
    pub const OK: u8 = 0;
    pub const JOB_FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const DB_UNREACHABLE: u8 = 75;
    pub const CONFIG: u8 = 78;
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Demo(#[from] DemoError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Io(String),
}

impl AppError {
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::Config(_) => exit::CONFIG,
            AppError::Db(e) | AppError::Demo(DemoError::Db(e)) if e.is_unreachable() => {
                exit::DB_UNREACHABLE
            }
            AppError::Db(e) | AppError::Service(ServiceError::Daemon(DaemonError::Database(e)))
                if e.is_configuration() =>
            {
                exit::CONFIG
            }
            AppError::Usage(_) => exit::USAGE,
            _ => exit::JOB_FAILED,
        }
    }
}

/// Runs the command line: loads settings, sets up logging and the database, dispatches.
pub fn run(cli: Cli) -> Result<ExitCode, AppError> {
    cli.refuse_future_at(Utc::now()).map_err(AppError::Usage)?;
    cli.refuse_reversed_range().map_err(AppError::Usage)?;
    cli.usage_subject().map_err(AppError::Usage)?;
    let mut settings = load_settings(cli.config.as_deref())?;
    crate::logging::init(&settings.log);

    if cli.check_config {
        print!("{}", settings.to_redacted_toml());
        println!("# configuration is valid");
        return Ok(ExitCode::SUCCESS);
    }

    // The demo cluster lives as long as this value; dropping it stops the server.
    let _cluster: Option<EmbeddedPg> = if cli.demo {
        Some(start_demo(&mut settings)?)
    } else {
        None
    };
    if settings.database.url.is_empty() && !cli.list_jobs {
        return Err(ConfigError::invalid(
            "database.url",
            "not set; set it in the config file, as USAGE_WORKER__DATABASE__URL or DATABASE_URL \
             (postgres://user@host:5432/dbname), or try --demo",
        )
        .into());
    }
    let settings = Arc::new(settings);
    let url = db::effective_url(&settings)?;
    let ctx = Arc::new(Ctx::new(settings.clone(), url));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("usage-worker")
        .build()
        .map_err(|e| AppError::Io(format!("cannot start the async runtime: {e}")))?;

    if cli.demo && !cli.list_jobs {
        let mut conn = ctx.connect()?;
        ctx.migrate(&mut conn)?;
        if demo::load_demo_data(&mut conn)? {
            eprintln!("demo: loaded plans, 1,000 users, 3 organizations and 30 days of events");
        }
    }
    dispatch(&cli, ctx, &runtime)
}

/// Loads the configuration and makes the start-up checks that need more than `config`: the
/// alert templates (built in, or from `mail.templates_dir`) must load and render.
pub fn load_settings(path: Option<&Path>) -> Result<Settings, ConfigError> {
    load_settings_with_env(path, std::env::vars())
}

/// As [`load_settings`], with the environment given explicitly (tests).
pub fn load_settings_with_env(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, ConfigError> {
    let settings = Settings::load_with_env(path, env)?;
    Templates::load(settings.mail.templates_dir.as_deref())
        .and_then(|t| t.render_sample())
        .map_err(|e| ConfigError::invalid("mail.templates_dir", e.to_string()))?;
    Ok(settings)
}

/// Starts the private cluster and points the settings at it; without a configured mail
/// transport, alert emails are written to files in the demo directory.
fn start_demo(settings: &mut Settings) -> Result<EmbeddedPg, AppError> {
    let cluster = demo::start_cluster(settings)?;
    settings.database.url = cluster.url(demo::DEMO_DATABASE);
    settings.database.password = None;
    settings.database.password_file = None;
    if settings.mail.transport.is_none() {
        let dir = settings
            .mail
            .file
            .dir
            .get_or_insert_with(|| default_demo_dir().join("mail"));
        eprintln!("demo: alert emails are written to {}", dir.display());
        settings.mail.transport = Some(MailTransportKind::File);
    }
    eprintln!(
        "demo: private PostgreSQL in {} (database {})",
        cluster.data_dir().display(),
        demo::DEMO_DATABASE
    );
    Ok(cluster)
}

/// The one action the flags ask for; without one, the daemon.
fn dispatch(
    cli: &Cli,
    ctx: Arc<Ctx>,
    runtime: &tokio::runtime::Runtime,
) -> Result<ExitCode, AppError> {
    if cli.migrate {
        return migrate(&ctx);
    }
    if cli.list_jobs {
        return list_jobs(&ctx);
    }
    if cli.status {
        return status::status(&ctx, cli.limit);
    }
    if let Some(subject) = cli.usage_subject().map_err(AppError::Usage)? {
        return usage(&ctx, subject, cli.json);
    }
    if cli.export_csv {
        return export_csv(&ctx, cli);
    }
    if let Some(kinds) = &cli.run {
        return runtime.block_on(run_jobs(ctx, &kinds.0, cli));
    }
    runtime.block_on(crate::service::run(ctx, shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}

/// A connection for a command that works on the database, after checking that the session
/// stays this program's own (no transaction-mode pooler; see `db::refuse_transaction_pooler`).
fn connect_session(ctx: &Ctx) -> Result<diesel::PgConnection, AppError> {
    db::refuse_transaction_pooler(&ctx.connection_url)?;
    Ok(ctx.connect()?)
}

fn migrate(ctx: &Arc<Ctx>) -> Result<ExitCode, AppError> {
    let mut conn = connect_session(ctx)?;
    let applied = ctx.migrate(&mut conn)?;
    db::store_settings(&mut conn, &ctx.settings.ingest)?;
    if applied.is_empty() {
        println!("schema is up to date");
    } else {
        for version in applied {
            println!("applied {version}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    tracing::info!("shutdown requested");
}

async fn run_jobs(ctx: Arc<Ctx>, kinds: &[JobKind], cli: &Cli) -> Result<ExitCode, AppError> {
    if let Some(org) = cli.org
        && let Some(kind) = kinds.iter().find(|kind| !kind.takes_org())
    {
        return Err(AppError::Usage(format!(
            "--org {org} limits a manual reset (reset-daily, reset-monthly) to an organization; \
             {} takes no --org",
            kind.name()
        )));
    }
    let ctx2 = ctx.clone();
    let clock = tokio::task::spawn_blocking(move || catchup::prepare_database(&ctx2))
        .await
        .map_err(|e| AppError::Io(e.to_string()))??;
    // Checked against this host's clock before connecting; the database's decides.
    cli.refuse_future_at(clock.database_now)
        .map_err(AppError::Usage)?;
    let identity = Identity::current();
    let mut rows = Vec::new();
    let mut all_ok = true;
    for &kind in kinds {
        let plan = ctx.settings.job_plan(kind)?;
        let request = RunRequest {
            kind,
            trigger: Trigger::Manual,
            scheduled_for: cli.at.unwrap_or(clock.database_now),
            at: cli.at,
            opts: RunOpts {
                dry_run: cli.dry_run,
                user_id: cli.user,
                org_id: cli.org,
                from: cli.from,
                to: cli.to,
                ..RunOpts::default()
            },
            timeout: plan.timeout,
        };
        let outcome = runner::execute(ctx.clone(), identity.clone(), request).await?;
        all_ok &= matches!(outcome, RunOutcome::Succeeded { .. });
        rows.push((kind, outcome));
    }
    print!("{}", result_table(&rows, cli.dry_run));
    let only_lost = rows
        .iter()
        .all(|(_, o)| matches!(o, RunOutcome::Succeeded { .. } | RunOutcome::Lost { .. }));
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else if only_lost {
        // Nothing failed; the database went away under a run (EX_TEMPFAIL: try again).
        ExitCode::from(exit::DB_UNREACHABLE)
    } else {
        ExitCode::from(exit::JOB_FAILED)
    })
}

fn result_table(rows: &[(JobKind, RunOutcome)], dry_run: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<14} {:<10} {:>9}  RESULT",
        "JOB", "STATUS", "DURATION"
    );
    for (kind, outcome) in rows {
        let (elapsed, text) = match outcome {
            RunOutcome::Succeeded {
                report, elapsed, ..
            } => (Some(elapsed), report.summary.clone()),
            RunOutcome::Failed { error, elapsed, .. } => (Some(elapsed), error.clone()),
            RunOutcome::Lost { error, elapsed, .. } => (
                Some(elapsed),
                format!("lost the database: {error}; nothing of the run was kept, run it again"),
            ),
            RunOutcome::Skipped { reason, .. } => (None, reason.clone()),
            RunOutcome::AlreadyRan => (None, "another process ran it".into()),
        };
        let duration =
            elapsed.map_or_else(|| "-".to_string(), |d| format!("{:.2}s", d.as_secs_f64()));
        let _ = writeln!(
            out,
            "{:<14} {:<10} {:>9}  {}",
            kind.name(),
            outcome.status(),
            duration,
            text
        );
    }
    for (kind, outcome) in rows {
        // A dry run may list what it would do, one line per item.
        if let RunOutcome::Succeeded { report, .. } = outcome
            && let Some(lines) = report.details.get("lines").and_then(|l| l.as_array())
        {
            for line in lines.iter().filter_map(|l| l.as_str()) {
                let _ = writeln!(out, "  {}: {line}", kind.name());
            }
        }
    }
    if dry_run {
        let _ = writeln!(out, "(dry run: nothing was changed)");
    }
    out
}

fn list_jobs(ctx: &Arc<Ctx>) -> Result<ExitCode, AppError> {
    let plans = ctx.settings.job_plans()?;
    let last_runs = if ctx.settings.database.url.is_empty() {
        Err("database.url is not set".to_string())
    } else {
        ctx.connect()
            .map_err(|e| e.to_string())
            .and_then(|mut c| ledger::last_runs(&mut c).map_err(|e| e.to_string()))
    };
    let now = Utc::now();
    println!(
        "{:<14} {:<16} {:<21} {:<32} DESCRIPTION",
        "JOB", "SCHEDULE (UTC)", "NEXT RUN", "LAST RUN"
    );
    for plan in plans {
        let (schedule, next) = match &plan.schedule {
            Some(s) => (
                s.source().to_string(),
                s.next_after(now)
                    .map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%SZ").to_string()),
            ),
            None => ("disabled".to_string(), "-".to_string()),
        };
        let last = match &last_runs {
            Ok(runs) => runs
                .iter()
                .find(|r| r.job == plan.kind.name())
                .map_or("never".into(), |r| {
                    format!("{} {}", r.started_at.format("%Y-%m-%d %H:%M:%SZ"), r.status)
                }),
            Err(_) => "?".into(),
        };
        println!(
            "{:<14} {:<16} {:<21} {:<32} {}",
            plan.kind.name(),
            schedule,
            next,
            last,
            job_description(plan.kind, &ctx.settings)
        );
    }
    if let Err(e) = last_runs {
        eprintln!("last runs unknown: {e}");
    }
    Ok(ExitCode::SUCCESS)
}

/// A job's description with the settings in effect where it names them (thresholds, months).
fn job_description(kind: JobKind, settings: &Settings) -> String {
    match kind {
        JobKind::Alerts => jobs::alerts::description(settings),
        JobKind::Retention => jobs::retention::description(settings),
        _ => kind.description().to_string(),
    }
}

fn usage(ctx: &Arc<Ctx>, subject: Subject, as_json: bool) -> Result<ExitCode, AppError> {
    let mut conn = connect_session(ctx)?;
    let now = db::clock::read(&mut conn)
        .map_err(DbError::from)?
        .database_now;
    let report = quota_report::load_report(&mut conn, subject, now)
        .map_err(DbError::from)?
        .ok_or_else(|| AppError::Usage(subject.not_found("--usage")))?;
    if as_json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
    Ok(ExitCode::SUCCESS)
}

fn export_csv(ctx: &Arc<Ctx>, cli: &Cli) -> Result<ExitCode, AppError> {
    let (Some(from), Some(to)) = (cli.from, cli.to) else {
        return Err(AppError::Usage(
            "--export-csv needs --from and --to (YYYY-MM-DD)".into(),
        ));
    };
    let mut conn = connect_session(ctx)?;
    let out: Box<dyn std::io::Write> = match &cli.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .map_err(|e| AppError::Io(format!("cannot create {}: {e}", path.display())))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let rows =
        write_daily_csv(&mut conn, from, to, cli.export_scope(), out).map_err(|e| match e {
            ExportError::Invalid(message) => AppError::Usage(message),
            e => AppError::Io(e.to_string()),
        })?;
    if let Some(path) = &cli.output {
        eprintln!("exported {rows} row(s) to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_default_settings_each_job_is_described_as_in_the_static_text() {
        let settings = Settings::default();
        for &kind in JobKind::ALL {
            assert_eq!(job_description(kind, &settings), kind.description());
        }
    }
}
