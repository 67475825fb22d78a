//! The single integration-test binary: real HTTP, real databases (SQLite and PostgreSQL),
//! and the simulators of Stripe, TTLock and Shelly on 127.0.0.1. `TEST_LOG=1` prints logs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod accounts;
mod accounts_browser;
mod accounts_support;
mod browser;
mod catalogue_writes;
mod checkout;
mod dashboard_api;
mod dashboard_browser;
mod dashboard_pages;
mod device_sessions;
mod door_access;
mod guest_browser;
mod guest_pages;
mod guest_tokens;
mod helpers;
mod history;
mod integrations_wiring;
mod journal;
mod operations;
mod operator_actions;
mod projections;
mod read_api;
mod settings;
mod shelly;
mod sim_helpers;
mod stripe_end_to_end;
mod stripe_facts;
mod stripe_processing;
mod stripe_sim;
mod stripe_support;
mod stripe_webhook;
mod subscriptions;
mod support;
mod ttlock;
