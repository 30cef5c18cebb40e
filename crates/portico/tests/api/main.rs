//! Portico's HTTP integration tests: one binary, every test against SQLite and PostgreSQL.

mod harness;

mod cli;
mod crud;
mod durability;
mod errors;
mod fixtures;
mod search_oracle;
mod transactions;
