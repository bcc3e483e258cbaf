//! The integration tests, one binary: a module per area, all sharing the `support` module
//! (one PostgreSQL cluster per run, a fresh database per test, helpers).

mod support;

mod aggregate;
mod alerts;
mod cli;
mod crash;
mod data_trust;
mod docs;
mod mail;
mod migrations;
mod operator_trust;
mod org_cli;
mod org_seed;
mod outages;
mod partitions;
mod period_bounds;
mod poison;
mod quota_end_to_end;
mod reliability;
mod resets;
mod retention;
mod runner_trust;
mod scheduler;
mod schema;
mod schema_home;
mod service;
mod webhooks;
