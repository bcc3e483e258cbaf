//! The integration tests, one binary: a module per area, all sharing the `support` module
//! (one PostgreSQL cluster per run, a fresh database per test, helpers).

mod support;

mod aggregate;
mod alert_content;
mod alert_delivery;
mod alerts;
mod calendar;
mod cli;
mod conservation;
mod crash;
mod data_trust;
mod definitions;
mod demo;
mod docs;
mod fresh_answers;
mod grants;
mod grants_limits;
mod grants_property;
mod grants_roles;
mod hard_limits;
mod idempotency;
mod mail;
mod manual_resets;
mod migrations;
mod operator_trust;
mod org_security;
mod outages;
mod partitions;
mod period_bounds;
mod poison;
mod quota_end_to_end;
mod rebuild;
mod reliability;
mod resets;
mod retention;
mod runner_trust;
mod scheduler;
mod schema;
mod schema_home;
mod service;
mod summaries;
mod topologies;
mod usage_check;
mod usage_report;
mod webhooks;
