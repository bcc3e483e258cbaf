//! `reset-daily`: closes every ended daily quota period, users' and organizations', at
//! its own boundary (the user's or the organization's zone and anchor), reconciled against
//! the raw events, and opens the next one; with `--user` or `--org`, a manual reset of that
//! user's or organization's current period. See [`super::periods`].

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;

use super::periods::{QuotaPeriod, run_reset};
use super::{Ctx, JobError, JobReport, RunOpts};

pub fn run(
    ctx: &Ctx,
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    opts: &RunOpts,
) -> Result<JobReport, JobError> {
    run_reset(ctx, conn, now, opts, QuotaPeriod::Day)
}
