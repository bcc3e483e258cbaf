//! Recording what a job did outside the database (an email sent, a webhook posted) when the
//! database is lost at that moment, as in a failover: the record is written on a fresh
//! connection (a multi-host URL with `target_session_attrs=read-write` finds the new primary),
//! retried for a while, so the effect is not repeated by the next run.

use std::time::{Duration, Instant};

use diesel::pg::PgConnection;

use super::{Ctx, JobError};

/// How long a record after an outside effect is retried on fresh connections.
pub const RECORD_PATIENCE: Duration = Duration::from_secs(90);

/// Runs `write` on `conn`; when `conn` has lost its database, runs it again on fresh
/// connections until it succeeds or [`RECORD_PATIENCE`] passes. Once it has been written
/// elsewhere, the run still ends with the original error (its session, and with it the job's
/// lock, is gone) and is repeated later; what `write` recorded is not done again.
pub fn record_surviving_failover<T>(
    ctx: &Ctx,
    conn: &mut PgConnection,
    what: &str,
    mut write: impl FnMut(&mut PgConnection) -> Result<T, JobError>,
) -> Result<T, JobError> {
    let lost = match write(conn) {
        Err(e) if e.lost_database() => e,
        other => return other,
    };
    tracing::warn!(error = %lost, "lost the database while recording {what}; recording it on a new connection");
    let deadline = Instant::now() + RECORD_PATIENCE;
    let mut delay = Duration::from_millis(250);
    loop {
        match ctx.connect() {
            Ok(mut fresh) => match write(&mut fresh) {
                Ok(_) => {
                    tracing::info!(
                        "{what} recorded after the database was lost; the run ends and is repeated"
                    );
                    return Err(lost);
                }
                Err(e) if e.lost_database() => {}
                Err(e) => return Err(e),
            },
            Err(e) => tracing::debug!(error = %e, "no primary yet"),
        }
        if Instant::now() + delay > deadline {
            tracing::error!(
                "could not record {what} within {}s; it may be repeated by the next run",
                RECORD_PATIENCE.as_secs()
            );
            return Err(lost);
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
