//! Clients for the outside world that opens doors and powers devices.
//!
//! - [`ttlock`]: TTLock Cloud Open API v3 (OAuth, locks, passcodes, passage mode).
//! - [`shelly`]: Shelly Cloud Control API v2 and local Gen2 JSON-RPC (relays).
//! - [`stripe`]: Stripe (checkout, capture/cancel/refund, events), the webhook inbox's
//!   processing and catch-up.
//! - [`health`]: the shared per-module health record every client updates.
//!
//! The clients speak the wire protocols only; the domain's gateway traits are implemented
//! by thin adapters elsewhere, so these modules stay testable against the simulators in
//! [`crate::sim`] with nothing but real HTTP.

pub mod health;
pub mod shelly;
pub mod stripe;
pub mod ttlock;
