//! Portico's HTTP integration tests: one binary, every test against SQLite and PostgreSQL.

mod harness;

mod crud;
mod durability;
mod errors;
mod transactions;
