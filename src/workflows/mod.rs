//! Process managers: journal subscribers that turn facts into commands.
//!
//! - [`door_access`]: a paid door payment gets its TTLock code; a full refund deletes it;
//!   a code whose window ended is deleted; failed TTLock calls are retried with backoff.
//! - [`refunds`]: a refund decision becomes a durable job that asks Stripe (with the
//!   request's idempotency key) and records Stripe's answer.
//! - [`captures`]: likewise for a device payment's capture and the release of its
//!   authorization, and a deadline that settles an authorization before Stripe's 7 days.
//! - [`schedule`]: the durable "do this later" table and the worker that runs it.
//!
//! Workflows run with [`Delivery::Effects`](crate::store::subscription::Delivery): each
//! event is reacted to outside any transaction and the checkpoint moves after it, so a
//! crash repeats at most the last event — every command they send is idempotent.

pub mod captures;
pub mod device_sessions;
pub mod door_access;
pub mod refunds;
pub mod schedule;
