//! Portico's HTTP integration tests: one binary, every test against SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed expectation is the point

mod harness;
mod legacy_portal;
mod link_harness;

mod action_links;
mod bulk;
mod bulk_processes;
mod cli;
mod crud;
mod durability;
mod enforcement;
mod errors;
mod fixtures;
mod hostile;
mod link;
mod link_cli;
mod link_convert;
mod link_faults;
mod link_security;
mod link_vault;
mod payer_to_payer;
mod search_oracle;
mod smart;
mod subscription_processes;
mod subscriptions;
mod sync;
mod sync_client;
mod token_exchange;
mod transactions;
