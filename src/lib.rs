//! usage-worker: keeps the usage and quota books of a SaaS product in PostgreSQL.
//!
//! Applications write one row per usage event; this daemon does the scheduled work that
//! must happen later and exactly once. See `README.md` and `docs/`.

pub mod app;
pub mod cli;
pub mod config;
pub mod db;
pub mod demo;
pub mod embedded_pg;
pub mod export;
pub mod format;
pub mod jobs;
pub mod ledger;
pub mod logging;
pub mod mail;
pub mod metrics;
pub mod notify;
pub mod quota_report;
pub mod schedule;
pub mod scheduler;
pub mod service;
