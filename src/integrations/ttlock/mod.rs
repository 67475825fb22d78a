//! TTLock Cloud Open API v3 client (see `reference/ttlock.md`).
//!
//! - [`config`]: [`TtlockConfig`], built from `TTLOCK_*` variables by the app.
//! - [`client`]: [`TtlockClient`], the calls Latchkey makes (locks, passcodes, passage mode).
//! - [`passcode`]: the request/result types of passcode calls and the window rules.
//! - [`error`]: [`TtlockError`], typed from TTLock's `errcode`s, retryable or not.
//! - `token`, `transport`, `wire`: OAuth token cache, HTTP exchange, JSON shapes.
//!
//! TTLock answers HTTP 200 for errors, with an `errcode` in the body, so every response
//! goes through one parser that treats "no `errcode` or `errcode` 0" as success.

pub mod client;
pub mod config;
pub mod error;
pub mod gateway;
pub mod passcode;
mod token;
mod transport;
pub mod wire;

pub use client::{Lock, PassageMode, PassagePeriod, TtlockClient};
pub use config::TtlockConfig;
pub use error::{PasscodeRejection, TtlockError};
pub use passcode::{
    AccessCodeRequest, CustomPasscodeRequest, DeleteMode, DeleteOutcome, IssuedPasscode,
    PasscodeKind, PasscodeRecord, PeriodPasscodeRequest,
};
