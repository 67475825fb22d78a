//! Latchkey: an event-sourced payments and access ledger.
//!
//! Modules in reading order:

/// The `latchkey` command line.
pub mod cli;
/// Typed settings from the environment.
pub mod config;
/// One command bus per aggregate, with conflict retries.
pub mod cqrs;
/// Routers, state and the edge error type.
pub mod http;
/// Prometheus metrics registry.
pub mod metrics;
/// The read models (crate `latchkey-projections`) run as journal subscribers; lag.
pub mod projections_runtime;
/// Application::build / run_until_stopped.
pub mod startup;
/// The journal, its hash chain, subscriptions and the database pools.
pub mod store;
/// Tracing subscriber set-up.
pub mod telemetry;
