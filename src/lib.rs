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
/// Clients of the outside services (Stripe, …).
pub mod integrations;
/// Prometheus metrics registry.
pub mod metrics;
/// Wire-faithful simulators of the outside services, for tests and the demo.
pub mod sim;
/// Application::build / run_until_stopped.
pub mod startup;
/// The journal, its hash chain, subscriptions and the database pools.
pub mod store;
/// Tracing subscriber set-up.
pub mod telemetry;
