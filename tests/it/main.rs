//! The integration tests, one binary: a module per area, all sharing the `support` module
//! (one PostgreSQL cluster per run, a fresh database per test, helpers).

mod support;

mod aggregate;
mod alerts;
mod calendar;
mod cli;
mod crash;
mod data_trust;
mod definitions;
mod docs;
mod fresh_answers;
mod hard_limits;
mod idempotency;
mod mail;
mod migrations;
mod operator_trust;
mod org_alerts;
mod org_books;
mod org_cli;
mod org_resets;
mod org_security;
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
mod usage_check;
mod webhooks;
