//! What the application (workflows, reconciler, operators) asks of a session.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::events::SessionTerms;
use crate::Actor;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SessionCommand {
    /// Creates the session holding the device (the Device answered `DeviceReserved`).
    /// For a session already queued with the same terms, this is its promotion, exactly
    /// like `OpenQueuedSession`; sent again for an opened session, it changes nothing.
    OpenSession {
        terms: SessionTerms,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// Creates the session waiting for the device (the Device answered
    /// `DeviceReservationQueued`).
    QueueSession {
        terms: SessionTerms,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// The Device promoted this queued session (`DeviceReserved` with `from_queue`); its
    /// grace period starts now.
    OpenQueuedSession { actor: Actor, at: DateTime<Utc> },
    /// Sends ON (opened: to start; active: to re-assert after the relay was found OFF).
    SwitchRelayOn { actor: Actor, at: DateTime<Utc> },
    /// Time is up: sends OFF (again, while `finishing`) until the relay confirms it.
    FinishSession { actor: Actor, at: DateTime<Utc> },
    /// Sends OFF again for a session that ended while its relay's OFF was not confirmed
    /// (a force-end, cancel or failure whose OFF was refused or lost). Changes nothing for
    /// a session whose OFF was confirmed, or one still live.
    SwitchRelayOff { actor: Actor, at: DateTime<Utc> },
    /// Reads the relay; an observation can confirm a pending ON or OFF.
    CheckRelay { actor: Actor, at: DateTime<Utc> },
    /// Gives up on a session that never started (grace over, payment cancelled or refunded).
    CancelSession {
        reason: String,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// Ends a live session at once, from any live state, with who and why.
    ForceEndSession {
        reason: String,
        actor: Actor,
        at: DateTime<Utc>,
    },
}
