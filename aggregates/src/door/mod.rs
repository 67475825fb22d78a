//! **Door** (`TYPE = "Door"`, id = the door uid, today TTLock's lock id as text): a lock
//! guests pay to open, its price and access duration, maintenance, the passage mode TTLock
//! reports, and one access code per payment: requested → issued | failed → revoked | expired.

mod aggregate;
pub mod commands;
pub mod error;
pub mod events;
pub mod services;

#[cfg(test)]
mod tests;

pub use aggregate::{AccessCode, Door, MAX_ACCESS_MINUTES, MAX_ISSUE_ATTEMPTS};
pub use commands::DoorCommand;
pub use error::DoorError;
pub use events::{
    AccessCodeState, CodeFallback, CompensationRule, DoorEvent, DoorStatus, PasscodeKind,
    ReissueMode,
};
pub use services::{DoorServices, LockGateway};
