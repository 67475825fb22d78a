//! The port to a device's relay: Shelly switches.
//!
//! The application implements [`RelayGateway`] with the Shelly Cloud (or local) API.
//! Switching is naturally idempotent (ON twice is ON), which is what makes it safe for
//! cqrs-es to run `handle` twice. An ON command carries `auto_off_seconds` so the device's
//! own timer turns the relay off even if Latchkey is down when the session ends.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Which relay: a Shelly device id and the channel (output) on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayTarget {
    pub shelly_device_id: String,
    pub channel: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayCommand {
    pub shelly_device_id: String,
    pub channel: u32,
    pub on: bool,
    /// Shelly's `toggle_after`: the device flips back to OFF by itself after this long.
    pub auto_off_seconds: Option<u64>,
}

/// What the relay reported after the command (or on a status read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayOutcome {
    pub is_on: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayErrorKind {
    /// Offline device, timeout, rate limit (Shelly allows one call per second): retry.
    Retryable,
    /// Unknown device, bad credentials: retrying as is will fail.
    Permanent,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct RelayError {
    pub kind: RelayErrorKind,
    pub message: String,
}

impl RelayError {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            kind: RelayErrorKind::Retryable,
            message: message.into(),
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            kind: RelayErrorKind::Permanent,
            message: message.into(),
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.kind == RelayErrorKind::Retryable
    }
}

#[async_trait]
pub trait RelayGateway: Send + Sync {
    async fn switch(&self, command: RelayCommand) -> Result<RelayOutcome, RelayError>;
    async fn status(&self, target: RelayTarget) -> Result<RelayOutcome, RelayError>;
    /// Sets the device's own auto-off (the second safety net behind each ON's timer): after
    /// any ON, however it came, the relay turns itself off after `seconds`. A device that
    /// cannot be configured this way answers a permanent error.
    async fn configure_auto_off(&self, target: RelayTarget, seconds: u64)
        -> Result<(), RelayError>;
}

/// The DeviceSession aggregate's `Services` (the Device aggregate uses the same port).
#[derive(Clone)]
pub struct SessionServices {
    pub relay: Arc<dyn RelayGateway>,
}

impl SessionServices {
    pub fn new(relay: Arc<dyn RelayGateway>) -> Self {
        Self { relay }
    }
}

impl fmt::Debug for SessionServices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionServices").finish_non_exhaustive()
    }
}

/// A scripted [`RelayGateway`] for tests (enable the `testing` feature outside this crate).
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::{RelayCommand, RelayError, RelayGateway, RelayOutcome, RelayTarget};
    use crate::fake::{lock, CallLog, Script};

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum RelayCall {
        Switch(RelayCommand),
        Status(RelayTarget),
        ConfigureAutoOff(RelayTarget, u64),
    }

    /// Answers from queued responses. With nothing queued, a switch succeeds and the relay
    /// ends up as commanded; a status read reports the last successful switch (OFF before
    /// any).
    #[derive(Debug, Default)]
    pub struct FakeRelayGateway {
        switches: Script<Result<RelayOutcome, RelayError>>,
        statuses: Script<Result<RelayOutcome, RelayError>>,
        is_on: Mutex<bool>,
        calls: CallLog<RelayCall>,
    }

    impl FakeRelayGateway {
        pub fn new() -> Self {
            Self::default()
        }

        pub fn queue_switch(&self, response: Result<RelayOutcome, RelayError>) {
            self.switches.push(response);
        }

        pub fn queue_status(&self, response: Result<RelayOutcome, RelayError>) {
            self.statuses.push(response);
        }

        pub fn calls(&self) -> Vec<RelayCall> {
            self.calls.all()
        }

        /// The relay as the fake believes it to be.
        pub fn is_on(&self) -> bool {
            *lock(&self.is_on)
        }
    }

    #[async_trait]
    impl RelayGateway for FakeRelayGateway {
        async fn switch(&self, command: RelayCommand) -> Result<RelayOutcome, RelayError> {
            self.calls.record(RelayCall::Switch(command.clone()));
            let response = self
                .switches
                .next()
                .unwrap_or(Ok(RelayOutcome { is_on: command.on }));
            if let Ok(outcome) = response {
                *lock(&self.is_on) = outcome.is_on;
            }
            response
        }

        async fn status(&self, target: RelayTarget) -> Result<RelayOutcome, RelayError> {
            self.calls.record(RelayCall::Status(target));
            self.statuses.next().unwrap_or_else(|| {
                Ok(RelayOutcome {
                    is_on: *lock(&self.is_on),
                })
            })
        }

        async fn configure_auto_off(
            &self,
            target: RelayTarget,
            seconds: u64,
        ) -> Result<(), RelayError> {
            self.calls
                .record(RelayCall::ConfigureAutoOff(target, seconds));
            Ok(())
        }
    }
}
