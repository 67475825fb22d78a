//! Latchkey: an event-sourced payments and access ledger.
//!
//! Start with `store` (the journal and subscriptions), then `cqrs` (commands), `http`
//! (the routes), `payments` and `integrations` (the outside world).

/// Operator accounts: users, passwords, TOTP, sessions, rate limits, user API tokens.
pub mod accounts;
/// The `latchkey` command line.
pub mod cli;
/// Typed settings from the environment.
pub mod config;
/// One command bus per aggregate, with conflict retries.
pub mod cqrs;
/// `latchkey demo`: the server with in-process simulators and a seeded catalogue.
pub mod demo;
/// The domain's ports wired to the configured clients.
pub mod gateways;
/// Routers, state and the edge error type.
pub mod http;
/// Clients of Stripe, TTLock and Shelly, and their health.
pub mod integrations;
/// Email to guests: the outbox, its worker, the SMTP client.
pub mod mail;
/// Prometheus metrics registry.
pub mod metrics;

/// Address policies: device networks (SSRF) and trusted proxies.
pub mod net_policy;
/// Starting checkouts, guest tokens, Stripe id lookups.
pub mod payments;
/// The read models (crate `latchkey-projections`) run as journal subscribers; lag.
pub mod projections_runtime;
/// Drives relays to the state the sessions' events say they should be in.
pub mod reconciler;
/// Stored secrets encrypted with LATCHKEY_MASTER_KEY.
pub mod secrets;
/// Settings saved from the dashboard, overlaid on the environment.
pub mod settings_store;
/// Every instance follows settings saved on another one (NOTIFY, and a check on a timer).
pub mod settings_sync;
/// Module health and the catch-up status, shared by every instance through the database.
pub mod shared_status;
/// Wire-faithful simulators of Stripe, TTLock and Shelly.
pub mod sim;
/// Application::build / run_until_stopped.
pub mod startup;
/// The journal, its hash chain, subscriptions and the database pools.
pub mod store;
/// Stripe events translated into Payment commands.
pub mod stripe_events;
/// Tracing subscriber set-up.
pub mod telemetry;
/// Server-rendered pages: guest flows, the page shell, static assets, branding.
pub mod ui;
/// Process managers turning facts into commands (door codes, …).
pub mod workflows;
