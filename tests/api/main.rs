//! The single integration-test binary: real HTTP, real databases (SQLite and PostgreSQL).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;
mod journal;
mod operations;
mod stripe_processing;
mod stripe_sim;
mod stripe_support;
mod stripe_webhook;
mod subscriptions;
mod support;
