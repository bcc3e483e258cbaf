//! The integration tests, one binary: a module per area, all sharing the `support` module
//! (one PostgreSQL cluster per run, a fresh database per test, helpers).

mod support;

mod aggregate;
mod alerts;
mod cli;
mod crash;
mod docs;
mod mail;
mod migrations;
mod outages;
mod partitions;
mod period_bounds;
mod poison;
mod quota_end_to_end;
mod reliability;
mod resets;
mod retention;
mod scheduler;
mod schema;
mod service;
mod webhooks;
