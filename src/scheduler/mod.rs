//! Running jobs: one run with its ledger row, lock, timeout and cancellation ([`runner`]; taking
//! the job's lock and the tick's row in `claim`), the daemon loop that wakes at UTC cron
//! instants ([`daemon`]), and what happens before it starts: database preparation, sweeping
//! abandoned runs and catch-up ([`catchup`]).
//!
//! tokio-cron-scheduler is used only to wake up at each job's cron instants. Everything that
//! must survive a crash or be shared between daemons lives in `job_runs`: at-most-once per
//! tick, abandoned runs, catch-up. Overlap is prevented by per-job advisory locks, and
//! shutdown waits for running jobs here, not in the scheduler crate.
//!
//! Modules above this one take the request and result types from [`outcome`].

pub mod catchup;
mod claim;
pub mod daemon;
pub mod outcome;
pub mod runner;

pub use catchup::{catch_up_requests, prepare_database, sweep_abandoned};
pub use daemon::{DaemonObserver, HEARTBEAT_EVERY, NoObserver, run_daemon};
pub use outcome::{DaemonError, RunOutcome, RunRequest};
pub use runner::execute;
