//! What callers ask of a relay and what they learn back.

use std::time::Duration;

/// A relay command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayCommand {
    /// Switch ON for a session with `remaining` time left. The device is always told to
    /// switch itself OFF after `remaining` plus the configured margin, so the relay cannot
    /// stay ON if Latchkey dies. Re-sending extends (re-arms) the timer.
    On {
        remaining: Duration,
    },
    Off,
}

/// A relay as the device (or the cloud's copy of it) reports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RelayStatus {
    pub output: bool,
    /// Origin of the last change as the device names it (`http`, `SHC`, `timer`, …).
    pub source: Option<String>,
    /// Device unix time (seconds) when the running flip-back timer started.
    pub timer_started_at: Option<f64>,
    /// Length of the running flip-back timer, seconds.
    pub timer_duration_s: Option<f64>,
}

/// How a switch was confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Confirmation {
    /// The cloud or the device answered the command with success.
    Answer,
    /// The answer was lost; reading the relay back showed the command took effect.
    ReadBack,
}

/// A successful switch.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SwitchOutcome {
    pub confirmation: Confirmation,
    /// The auto-off timer sent with an ON (remaining time + margin), seconds.
    pub toggle_after_s: Option<u64>,
    /// `was_on` from a local device's answer (the cloud does not say).
    pub was_on: Option<bool>,
    /// The relay as read back, when it was read.
    pub status: Option<RelayStatus>,
}
