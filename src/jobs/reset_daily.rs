//! `reset-daily`: closes every user's ended daily quota period at the user's own boundary,
//! reconciled against the raw events, and opens the next one; with `--user`, a manual reset
//! of that user's current period. See [`super::periods`].

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
