//! The single integration-test binary: real HTTP, real databases (SQLite and PostgreSQL).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod catalogue_writes;
mod checkout;
mod helpers;
mod journal;
mod operations;
mod stripe_facts;
mod subscriptions;
mod support;
