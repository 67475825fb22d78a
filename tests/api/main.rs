//! The single integration-test binary: real HTTP, real databases (SQLite and PostgreSQL).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;
mod history;
mod journal;
mod operations;
mod projections;
mod read_api;
mod subscriptions;
mod support;
