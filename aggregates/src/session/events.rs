//! What happened during one paid use of a device, relay commands included.

use std::fmt;

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::services::RelayTarget;
use crate::Actor;

/// The session states of API.md, spelled the same way in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Holds the device and waits (for at most the grace period) for the relay to come ON.
    Opened,
    /// Paid, waiting for the device: another session holds it.
    Queued,
    /// The relay is confirmed ON; the countdown runs until `ends_at`.
    Active,
    /// The time is up and OFF was sent; waiting for the relay to confirm OFF.
    Finishing,
    Completed,
    /// Never started: the relay never came ON (or the payment went away first); the
    /// payment is to be cancelled or refunded.
    Cancelled,
    /// Never started because the relay refused for good (unknown device, bad credentials).
    Failed,
    /// Ended early by someone, recorded with who and why.
    ForceEnded,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Opened => "opened",
            Self::Queued => "queued",
            Self::Active => "active",
            Self::Finishing => "finishing",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
            Self::ForceEnded => "force_ended",
        }
    }

    /// Whether the session is over for good.
    pub fn is_ended(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Cancelled | Self::Failed | Self::ForceEnded
        )
    }
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a session was sold: fixed when it is created, copied into its events so the
/// session never has to look at the device or the payment again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionTerms {
    pub session_id: Uuid,
    pub payment_id: Uuid,
    pub device_uid: String,
    pub relay: RelayTarget,
    pub plan_id: String,
    pub plan_minutes: u32,
    /// How long an opened session waits for the relay to come ON before it is cancelled.
    pub grace_seconds: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum SessionEvent {
    /// Created while another session holds the device.
    SessionQueued {
        terms: SessionTerms,
        at: DateTime<Utc>,
    },
    /// Holds the device now (created so, or promoted from the queue); grace starts `at`.
    SessionOpened {
        terms: SessionTerms,
        grace_ends_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    RelayOnRequested {
        attempt: u32,
        auto_off_seconds: u64,
        at: DateTime<Utc>,
    },
    RelayOnSucceeded {
        attempt: u32,
        at: DateTime<Utc>,
    },
    RelayOnFailed {
        attempt: u32,
        error: String,
        retryable: bool,
        at: DateTime<Utc>,
    },
    /// The relay is confirmed ON: the paid countdown starts here, not at payment.
    SessionActivated {
        started_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
    },
    /// The time is up; OFF follows in the same command.
    SessionFinishing {
        at: DateTime<Utc>,
    },
    RelayOffRequested {
        attempt: u32,
        at: DateTime<Utc>,
    },
    RelayOffSucceeded {
        attempt: u32,
        at: DateTime<Utc>,
    },
    RelayOffFailed {
        attempt: u32,
        error: String,
        retryable: bool,
        at: DateTime<Utc>,
    },
    /// A status read found the relay other than last known.
    RelayStateObserved {
        is_on: bool,
        at: DateTime<Utc>,
    },
    SessionCompleted {
        at: DateTime<Utc>,
    },
    SessionCancelled {
        reason: String,
        at: DateTime<Utc>,
    },
    SessionFailed {
        reason: String,
        at: DateTime<Utc>,
    },
    SessionForceEnded {
        reason: String,
        actor: Actor,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for SessionEvent {
    fn event_type(&self) -> String {
        let name = match self {
            Self::SessionQueued { .. } => "SessionQueued",
            Self::SessionOpened { .. } => "SessionOpened",
            Self::RelayOnRequested { .. } => "RelayOnRequested",
            Self::RelayOnSucceeded { .. } => "RelayOnSucceeded",
            Self::RelayOnFailed { .. } => "RelayOnFailed",
            Self::SessionActivated { .. } => "SessionActivated",
            Self::SessionFinishing { .. } => "SessionFinishing",
            Self::RelayOffRequested { .. } => "RelayOffRequested",
            Self::RelayOffSucceeded { .. } => "RelayOffSucceeded",
            Self::RelayOffFailed { .. } => "RelayOffFailed",
            Self::RelayStateObserved { .. } => "RelayStateObserved",
            Self::SessionCompleted { .. } => "SessionCompleted",
            Self::SessionCancelled { .. } => "SessionCancelled",
            Self::SessionFailed { .. } => "SessionFailed",
            Self::SessionForceEnded { .. } => "SessionForceEnded",
        };
        name.to_owned()
    }

    fn event_version(&self) -> String {
        crate::EVENT_VERSION.to_owned()
    }
}
