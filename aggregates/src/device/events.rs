//! What happened to a device: its catalogue entry, maintenance, and who holds its relay.

use std::fmt;

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Actor, Money};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    #[default]
    Active,
    Maintenance,
}

impl fmt::Display for DeviceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Active => "active",
            Self::Maintenance => "maintenance",
        })
    }
}

/// What a guest can buy on a device: so many minutes for a price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsagePlan {
    pub plan_id: String,
    pub name: String,
    pub minutes: u32,
    pub price: Money,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum DeviceEvent {
    DeviceRegistered {
        device_uid: String,
        name: String,
        location: String,
        time_zone: String,
        shelly_device_id: String,
        shelly_channel: u32,
        plans: Vec<UsagePlan>,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// The values after the change.
    DeviceDetailsChanged {
        name: String,
        location: String,
        time_zone: String,
        shelly_device_id: String,
        shelly_channel: u32,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// The whole plan list after the change; started payments keep their locked price.
    DevicePlansChanged {
        plans: Vec<UsagePlan>,
        actor: Actor,
        at: DateTime<Utc>,
    },
    DeviceMaintenanceStarted {
        reason: String,
        actor: Actor,
        at: DateTime<Utc>,
    },
    DeviceMaintenanceEnded {
        reason: String,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// `session_id` now holds the relay; `from_queue` says it waited for a previous one.
    DeviceReserved {
        session_id: Uuid,
        payment_id: Uuid,
        from_queue: bool,
        at: DateTime<Utc>,
    },
    /// The device is busy: `session_id` waits at `position` (1 = next).
    DeviceReservationQueued {
        session_id: Uuid,
        payment_id: Uuid,
        position: u32,
        at: DateTime<Utc>,
    },
    /// `session_id` ended and no longer holds the relay.
    DeviceReleased { session_id: Uuid, at: DateTime<Utc> },
    /// A queued session left the queue before its turn (cancelled, refunded).
    QueuedSessionWithdrawn { session_id: Uuid, at: DateTime<Utc> },
    /// Someone switched the relay by hand (or the reconciler's sweep), with why.
    RelaySwitched {
        on: bool,
        is_on: bool,
        reason: String,
        actor: Actor,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for DeviceEvent {
    fn event_type(&self) -> String {
        let name = match self {
            Self::DeviceRegistered { .. } => "DeviceRegistered",
            Self::DeviceDetailsChanged { .. } => "DeviceDetailsChanged",
            Self::DevicePlansChanged { .. } => "DevicePlansChanged",
            Self::DeviceMaintenanceStarted { .. } => "DeviceMaintenanceStarted",
            Self::DeviceMaintenanceEnded { .. } => "DeviceMaintenanceEnded",
            Self::DeviceReserved { .. } => "DeviceReserved",
            Self::DeviceReservationQueued { .. } => "DeviceReservationQueued",
            Self::DeviceReleased { .. } => "DeviceReleased",
            Self::QueuedSessionWithdrawn { .. } => "QueuedSessionWithdrawn",
            Self::RelaySwitched { .. } => "RelaySwitched",
        };
        name.to_owned()
    }

    fn event_version(&self) -> String {
        crate::EVENT_VERSION.to_owned()
    }
}
