//! What happened to a door and to the access codes issued on it.

use std::fmt;

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Actor, Money};

/// Whether a door takes new payments and issues codes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DoorStatus {
    #[default]
    Active,
    Maintenance,
}

impl fmt::Display for DoorStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Active => "active",
            Self::Maintenance => "maintenance",
        })
    }
}

/// Where one payment's access code stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessCodeState {
    /// Asked for; the attempt's outcome follows in the same command.
    Requested,
    /// Live on the lock between `valid_from` and `valid_to`.
    Issued,
    /// The last attempt failed; another attempt may follow.
    Failed,
    /// Deleting it failed; it may still open the door until deleted or expired.
    RevocationPending,
    /// Deleted (or never created); no code will be issued for this payment again.
    Revoked,
    /// Its validity window ended.
    Expired,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum DoorEvent {
    DoorRegistered {
        door_uid: String,
        lock_id: i64,
        name: String,
        location: String,
        time_zone: String,
        price: Money,
        access_minutes: u32,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// Name, location, time zone or access duration changed; the values after the change.
    DoorDetailsChanged {
        name: String,
        location: String,
        time_zone: String,
        access_minutes: u32,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// Applies to checkouts started from now on; started payments keep their locked price.
    DoorPriceChanged {
        previous_price: Money,
        price: Money,
        actor: Actor,
        at: DateTime<Utc>,
    },
    DoorMaintenanceStarted {
        reason: String,
        actor: Actor,
        at: DateTime<Utc>,
    },
    DoorMaintenanceEnded {
        reason: String,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// TTLock reported the lock's passage mode (read-only for Latchkey).
    PassageModeObserved { enabled: bool, at: DateTime<Utc> },
    /// A paid payment asked for a code; the first attempt follows in the same command.
    AccessCodeRequested {
        payment_id: Uuid,
        access_minutes: u32,
        at: DateTime<Utc>,
    },
    AccessCodeIssued {
        payment_id: Uuid,
        attempt: u32,
        passcode_id: i64,
        code: String,
        valid_from: DateTime<Utc>,
        valid_to: DateTime<Utc>,
        remotely_revocable: bool,
        at: DateTime<Utc>,
    },
    AccessCodeIssueFailed {
        payment_id: Uuid,
        attempt: u32,
        reason: String,
        /// Whether TTLock said a later attempt may succeed.
        retryable: bool,
        at: DateTime<Utc>,
    },
    /// The code is gone from the lock, or was never created (`passcode_id` is `None`) —
    /// unless `still_valid_until` is set: then only TTLock's cloud record was deleted (a
    /// period passcode on a lock without a gateway, which the lock keeps offline), and the
    /// code keeps opening the door until that time. Never shown as "revoked" then.
    AccessCodeRevoked {
        payment_id: Uuid,
        passcode_id: Option<i64>,
        reason: String,
        actor: Actor,
        at: DateTime<Utc>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        still_valid_until: Option<DateTime<Utc>>,
    },
    /// Deleting the code failed; it is retried later and may still open the door.
    AccessCodeRevocationPending {
        payment_id: Uuid,
        passcode_id: i64,
        reason: String,
        attempt: u32,
        error: String,
        actor: Actor,
        at: DateTime<Utc>,
    },
    AccessCodeExpired {
        payment_id: Uuid,
        passcode_id: i64,
        valid_to: DateTime<Utc>,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for DoorEvent {
    fn event_type(&self) -> String {
        let name = match self {
            Self::DoorRegistered { .. } => "DoorRegistered",
            Self::DoorDetailsChanged { .. } => "DoorDetailsChanged",
            Self::DoorPriceChanged { .. } => "DoorPriceChanged",
            Self::DoorMaintenanceStarted { .. } => "DoorMaintenanceStarted",
            Self::DoorMaintenanceEnded { .. } => "DoorMaintenanceEnded",
            Self::PassageModeObserved { .. } => "PassageModeObserved",
            Self::AccessCodeRequested { .. } => "AccessCodeRequested",
            Self::AccessCodeIssued { .. } => "AccessCodeIssued",
            Self::AccessCodeIssueFailed { .. } => "AccessCodeIssueFailed",
            Self::AccessCodeRevoked { .. } => "AccessCodeRevoked",
            Self::AccessCodeRevocationPending { .. } => "AccessCodeRevocationPending",
            Self::AccessCodeExpired { .. } => "AccessCodeExpired",
        };
        name.to_owned()
    }

    fn event_version(&self) -> String {
        crate::EVENT_VERSION.to_owned()
    }
}
