//! Before the daemon schedules anything: the database is reachable and migrated, holds the
//! settings its functions read, runs left `running` by crashed processes are marked abandoned,
//! and each job whose latest tick was missed during downtime runs once.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;

use super::outcome::RunRequest;
use crate::config::JobPlan;
use crate::db::clock::ClockReading;
use crate::db::{self, DbError};
use crate::jobs::{Ctx, JobKind, RunOpts};
use crate::ledger::{self, RunStatus, Trigger};

/// Marks `running` rows of every job abandoned where no live process holds the job's lock.
pub fn sweep_abandoned(conn: &mut PgConnection) -> Result<usize, DbError> {
    let mut total = 0;
    for &kind in JobKind::ALL {
        if ledger::try_lock(conn, kind)? {
            total += ledger::mark_abandoned(conn, kind)?;
            ledger::unlock(conn, kind)?;
        }
    }
    Ok(total)
}

/// Refuses a transaction-mode pooler, connects, compares the clocks, migrates when
/// configured, writes `usage_settings` from the configuration, and sweeps runs abandoned by
/// crashed processes. Returns the clocks as compared.
pub fn prepare_database(ctx: &Ctx) -> Result<ClockReading, DbError> {
    db::refuse_transaction_pooler(&ctx.connection_url)?;
    let mut conn = ctx.connect()?;
    let clock = db::clock::read(&mut conn)?;
    ctx.clock.record(clock);
    if ctx.settings.database.migrate_on_start {
        let applied = ctx.migrate(&mut conn)?;
        if !applied.is_empty() {
            tracing::info!(migrations = ?applied, "migrations applied");
        }
    } else {
        let pending = db::pending_migrations(&mut conn)?;
        if !pending.is_empty() {
            return Err(DbError::Migration(format!(
                "{} migration(s) pending ({}); run `usage-worker --migrate` as the schema owner",
                pending.len(),
                pending.join(", ")
            )));
        }
    }
    db::store_settings(&mut conn, &ctx.settings.ingest)?;
    sweep_abandoned(&mut conn)?;
    Ok(clock)
}

/// Jobs whose latest tick within `scheduler.catch_up_horizon` has no successful run: each
/// runs once (like systemd's `Persistent=true`), not once per missed tick.
pub async fn catch_up_requests(
    ctx: &Arc<Ctx>,
    plans: &[JobPlan],
    now: DateTime<Utc>,
) -> Vec<RunRequest> {
    let horizon = chrono::Duration::from_std(ctx.settings.scheduler.catch_up_horizon.0)
        .unwrap_or(chrono::Duration::days(7));
    let ticks: Vec<(JobPlan, DateTime<Utc>)> = plans
        .iter()
        .filter_map(|p| {
            let tick = p.schedule.as_ref()?.latest_at_or_before(now)?;
            (tick >= now - horizon).then(|| (p.clone(), tick))
        })
        .collect();
    let ctx = ctx.clone();
    let found = tokio::task::spawn_blocking(move || missed_runs(&ctx, ticks)).await;
    match found {
        Ok(Ok(requests)) => requests,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "catch-up check failed; missed runs wait for their next tick");
            Vec::new()
        }
        Err(e) => {
            tracing::error!(error = %e, "catch-up task failed");
            Vec::new()
        }
    }
}

/// A catch-up request for each tick that has no successful run since, unless the tick is
/// held by a run that ended (a failed tick runs again at the next tick, not here). A tick that
/// only has `skipped` or `abandoned` rows was missed.
fn missed_runs(
    ctx: &Ctx,
    ticks: Vec<(JobPlan, DateTime<Utc>)>,
) -> Result<Vec<RunRequest>, DbError> {
    let mut conn = db::checkout(&ctx.pool, &ctx.connection_url)?;
    let mut requests = Vec::new();
    for (plan, tick) in ticks {
        let held_by_ended_run = ledger::tick_run(&mut conn, plan.kind, tick)?
            .is_some_and(|run| run.status != RunStatus::Running.as_str());
        if !held_by_ended_run && !ledger::succeeded_since(&mut conn, plan.kind, tick)? {
            tracing::info!(job.name = plan.kind.name(), missed_tick = %tick, "catching up a missed run");
            requests.push(RunRequest {
                kind: plan.kind,
                trigger: Trigger::Catchup,
                scheduled_for: tick,
                at: None,
                opts: RunOpts::default(),
                timeout: plan.timeout,
            });
        }
    }
    Ok(requests)
}
