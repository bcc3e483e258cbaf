//! `--status`: the database and its clock, quarantined events, webhook outcomes, what holds
//! the aggregation watermark back, and the latest runs.

use std::process::ExitCode;
use std::sync::Arc;

use super::{AppError, connect_session};
use crate::db::{self, DbError};
use crate::jobs::{self, Ctx, quarantine};
use crate::ledger;
use crate::redact::{mask_addresses, redact_url};

pub(super) fn status(ctx: &Arc<Ctx>, limit: i64) -> Result<ExitCode, AppError> {
    let mut conn = connect_session(ctx)?;
    let runs = ledger::recent_runs(&mut conn, limit.max(1)).map_err(DbError::from)?;
    println!("database: {}", redact_url(&ctx.settings.database.url));
    let clock = db::clock::read(&mut conn).map_err(DbError::from)?;
    println!("clock: {}", clock_status(&clock));
    let quarantined = quarantine::counts_by_reason(&mut conn).map_err(DbError::from)?;
    if let Some(reasons) = quarantined.filter(|r| !r.is_empty()) {
        let total: i64 = reasons.iter().map(|(_, n)| n).sum();
        let list: Vec<String> = reasons.iter().map(|(r, n)| format!("{r} {n}")).collect();
        println!(
            "quarantined events: {total} ({}); see usage_quarantine and docs/OPERATIONS.md",
            list.join(", ")
        );
    }
    print_webhook_outcomes(&mut conn)?;
    let holder = jobs::aggregate::held_back::holder(&mut conn).map_err(DbError::from)?;
    if let Some(holder) = holder.filter(jobs::aggregate::held_back::Holder::worth_reporting) {
        println!(
            "aggregation watermark held back by {} (see docs/OPERATIONS.md)",
            holder.describe()
        );
    }
    println!(
        "{:>6} {:<14} {:<8} {:<21} {:<21} {:>9} {:<10} RESULT",
        "RUN", "JOB", "TRIGGER", "SCHEDULED FOR", "STARTED", "DURATION", "STATUS"
    );
    for run in runs {
        let duration = run.finished_at.map_or("-".to_string(), |f| {
            format!(
                "{:.2}s",
                (f - run.started_at).num_milliseconds() as f64 / 1000.0
            )
        });
        // A run's error may quote a database or server message naming an address.
        let result = mask_addresses(
            &run.error
                .clone()
                .or(run.summary.clone())
                .unwrap_or_default(),
        );
        let user = run
            .user_id
            .map_or(String::new(), |u| format!(" [user {u}]"));
        println!(
            "{:>6} {:<14} {:<8} {:<21} {:<21} {:>9} {:<10} {}{}",
            run.id,
            run.job,
            run.trigger,
            run.scheduled_for.format("%Y-%m-%d %H:%M:%SZ"),
            run.started_at.format("%Y-%m-%d %H:%M:%SZ"),
            duration,
            run.status,
            result,
            user
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The clocks as `--status` shows them: the database's time, the skew, and what it causes.
fn clock_status(clock: &db::clock::ClockReading) -> String {
    let at = clock
        .database_now
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let skew = clock.skew.as_seconds_f64();
    let verdict = if clock.magnitude() > db::clock::REFUSE_SKEW {
        " (too far apart: the jobs that close, expire or delete refuse to run)"
    } else if clock.magnitude() > db::clock::WARN_SKEW {
        " (jobs take now from the database; fix this host's clock)"
    } else {
        ""
    };
    format!(
        "database {at}, skew {skew:+.1}s: {}{verdict}",
        clock.describe()
    )
}

/// One line per webhook endpoint host: deliveries by status, failures by class.
fn print_webhook_outcomes(conn: &mut diesel::PgConnection) -> Result<(), AppError> {
    let counts = jobs::alerts::webhooks::outcome_counts(conn).map_err(DbError::from)?;
    let mut hosts: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for c in counts.iter().flatten() {
        let entry = hosts.entry(c.host.as_str()).or_default();
        if c.endpoint_disabled && entry.is_empty() {
            entry.push("DISABLED by 410 Gone".to_string());
        }
        entry.push(match c.class.as_str() {
            "none" => format!("{} {}", c.status, c.n),
            class => format!("{} {} ({class})", c.status, c.n),
        });
    }
    for (host, outcomes) in hosts {
        println!("webhooks to {host}: {}", outcomes.join(", "));
    }
    Ok(())
}
