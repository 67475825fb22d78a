//! What the application asks of a device. `at` comes from the caller's clock.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::events::{DeviceStatus, UsagePlan};
use crate::Actor;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DeviceCommand {
    RegisterDevice {
        device_uid: String,
        name: String,
        location: String,
        /// IANA name such as `Europe/Paris`; validated by the caller.
        time_zone: String,
        shelly_device_id: String,
        shelly_channel: u32,
        plans: Vec<UsagePlan>,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// Changes any of the given fields; `None` keeps the current value.
    UpdateDevice {
        name: Option<String>,
        location: Option<String>,
        time_zone: Option<String>,
        shelly_device_id: Option<String>,
        shelly_channel: Option<u32>,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// Replaces the plan list.
    ChangePlans {
        plans: Vec<UsagePlan>,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// Entering maintenance refuses new sessions; leaving it starts the next queued one.
    SetDeviceStatus {
        status: DeviceStatus,
        reason: String,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// A paid session asks for the relay: reserved at once if free, queued if busy.
    ReserveDevice {
        session_id: Uuid,
        payment_id: Uuid,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// A session ended (or gave up its place in the queue); the next queued one is
    /// reserved in the same command.
    ReleaseDevice {
        session_id: Uuid,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// Switches the relay by hand (operator) or in a reconciler sweep (system).
    SwitchRelay {
        on: bool,
        reason: String,
        actor: Actor,
        at: DateTime<Utc>,
    },
}
