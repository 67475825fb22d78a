//! **DeviceSession** (`TYPE = "DeviceSession"`, id = our session UUID): one paid use of a
//! device. `queued → opened (grace) → active (relay confirmed ON; countdown) → finishing
//! (OFF sent) → completed`, or `cancelled` / `failed` (never started) or `force_ended`.
//! Every relay command and outcome is an event; the countdown's end is in `SessionActivated`.

mod aggregate;
pub mod commands;
pub mod error;
pub mod events;
pub mod services;

#[cfg(test)]
mod tests;

pub use aggregate::{
    DeviceSession, MAX_GRACE_SECONDS, MAX_PLAN_MINUTES, RELAY_AUTO_OFF_MARGIN_SECONDS,
};
pub use commands::SessionCommand;
pub use error::SessionError;
pub use events::{SessionEvent, SessionState, SessionTerms};
pub use services::{RelayGateway, SessionServices};
