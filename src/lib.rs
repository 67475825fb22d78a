//! Latchkey: an event-sourced payments and access ledger.
//!
//! Modules in reading order:

/// The `latchkey` command line.
pub mod cli;
/// Typed settings from the environment.
pub mod config;
/// One command bus per aggregate, with conflict retries.
pub mod cqrs;
/// The domain's ports wired to the configured clients.
pub mod gateways;
/// Routers, state and the edge error type.
pub mod http;
/// Prometheus metrics registry.
pub mod metrics;
/// Starting checkouts, guest tokens, Stripe id lookups.
pub mod payments;
/// Application::build / run_until_stopped.
pub mod startup;
/// The journal, its hash chain, subscriptions and the database pools.
pub mod store;
/// Stripe events translated into Payment commands.
pub mod stripe_events;
/// Tracing subscriber set-up.
pub mod telemetry;
