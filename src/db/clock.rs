//! The database's clock decides what time it is. Every job takes "now" from the database
//! (`clock_timestamp()` when its run starts), so a host whose clock runs ahead or behind
//! never closes a period early or late; the host's clock only decides when the scheduler
//! wakes up.
//!
//! The skew between the two clocks is measured at start and at every run, exported in
//! `/metrics` and shown by `--status`. Above [`WARN_SKEW`] it is logged as a warning; above
//! [`REFUSE_SKEW`] the jobs that close, expire or delete refuse to run, as a future `--at`
//! does: one of the two clocks is wrong, and which one cannot be known from here.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::Timestamptz;

/// Skew above which every measurement is logged as a warning.
pub const WARN_SKEW: Duration = Duration::from_secs(5);
/// Skew above which the jobs that act irreversibly as of now refuse to run.
pub const REFUSE_SKEW: Duration = Duration::from_secs(300);
/// While the skew stays above [`WARN_SKEW`], the warning is repeated this often.
const WARN_EVERY: Duration = Duration::from_secs(600);

/// One comparison of the two clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockReading {
    /// The database's `clock_timestamp()`.
    pub database_now: DateTime<Utc>,
    /// The database's clock minus this host's: positive when the host's clock is behind.
    /// The host's instant is the middle of the round trip.
    pub skew: TimeDelta,
}

impl ClockReading {
    /// The skew's size, whichever clock is ahead.
    pub fn magnitude(&self) -> Duration {
        self.skew.abs().to_std().unwrap_or(Duration::MAX)
    }

    /// `this host's clock is 2h 0m 3s ahead of the database's`.
    pub fn describe(&self) -> String {
        let direction = if self.skew < TimeDelta::zero() {
            "ahead of"
        } else {
            "behind"
        };
        format!(
            "this host's clock is {} {direction} the database's",
            human(self.magnitude())
        )
    }

    /// Why `job`, one that closes periods, expires alerts or deletes rows as of now, must not
    /// run with these clocks, when they disagree by more than [`REFUSE_SKEW`]. The caller
    /// decides which runs act irreversibly (a dry run never does).
    pub fn refusal(&self, job: &str) -> Option<String> {
        if self.magnitude() <= REFUSE_SKEW {
            return None;
        }
        Some(format!(
            "{}, more than {} apart: {} closes periods, expires alerts or deletes rows as of now, \
             which cannot be undone if the wrong clock decided, so it refuses to run; fix the \
             clock of this host or of the database server (NTP, chrony), or preview with \
             --dry-run",
            self.describe(),
            human(REFUSE_SKEW),
            job
        ))
    }
}

#[derive(QueryableByName)]
struct DatabaseNow {
    #[diesel(sql_type = Timestamptz)]
    now: DateTime<Utc>,
}

/// Reads the database's clock and compares it with this host's.
pub fn read(conn: &mut PgConnection) -> QueryResult<ClockReading> {
    let before = Utc::now();
    let row: DatabaseNow = diesel::sql_query("SELECT clock_timestamp() AS now").get_result(conn)?;
    let after = Utc::now();
    let host = before + (after - before) / 2;
    Ok(ClockReading {
        database_now: row.now,
        skew: row.now - host,
    })
}

/// The latest skew this process measured (for `/metrics`), and when it last warned.
#[derive(Debug, Default)]
pub struct ClockWatch {
    state: Mutex<WatchState>,
}

#[derive(Debug, Default)]
struct WatchState {
    latest: Option<ClockReading>,
    warned_at: Option<Instant>,
}

impl ClockWatch {
    /// Keeps `reading` as the latest; warns when the skew is above [`WARN_SKEW`], at once
    /// when it first is and then every [`WARN_EVERY`] while it stays.
    pub fn record(&self, reading: ClockReading) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.latest = Some(reading);
        if reading.magnitude() <= WARN_SKEW {
            if state.warned_at.take().is_some() {
                tracing::info!(
                    clock_skew_s = reading.skew.as_seconds_f64(),
                    "the host's and the database's clocks agree again"
                );
            }
            return;
        }
        if state.warned_at.is_some_and(|at| at.elapsed() < WARN_EVERY) {
            return;
        }
        state.warned_at = Some(Instant::now());
        let refused = if reading.magnitude() > REFUSE_SKEW {
            "; reset-daily, reset-monthly, alerts and retention refuse to run until they agree"
        } else {
            ""
        };
        tracing::warn!(
            clock_skew_s = reading.skew.as_seconds_f64(),
            "{}: jobs take now from the database, but schedules follow this host's clock{refused}; \
             fix the clock (NTP, chrony)",
            reading.describe()
        );
    }

    /// The database's clock minus this host's, in seconds, at the latest measurement.
    pub fn skew_seconds(&self) -> Option<f64> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.latest.map(|r| r.skew.as_seconds_f64())
    }
}

/// `2h 0m 3s`, `4m 10s`, `1.2s`.
fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 3600 {
        format!("{}h {}m {}s", secs / 3600, secs % 3600 / 60, secs % 60)
    } else if secs >= 60 {
        format!("{}m {}s", secs / 60, secs % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(skew_s: i64) -> ClockReading {
        ClockReading {
            database_now: DateTime::UNIX_EPOCH,
            skew: TimeDelta::seconds(skew_s),
        }
    }

    #[test]
    fn the_direction_of_the_skew_is_named_from_the_hosts_side() {
        assert_eq!(
            reading(-7203).describe(),
            "this host's clock is 2h 0m 3s ahead of the database's"
        );
        assert_eq!(
            reading(250).describe(),
            "this host's clock is 4m 10s behind the database's"
        );
    }

    #[test]
    fn a_refusal_comes_only_past_five_minutes_either_way_and_names_the_job() {
        for skew in [-301, 301, -7200] {
            let refusal = reading(skew).refusal("reset-daily").unwrap();
            assert!(refusal.contains("reset-daily closes periods"), "{refusal}");
            assert!(refusal.contains("--dry-run"), "{refusal}");
        }
        for skew in [-300, 0, 300] {
            assert!(reading(skew).refusal("retention").is_none(), "{skew}");
        }
    }
}
