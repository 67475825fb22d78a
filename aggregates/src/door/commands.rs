//! What the application asks of a door. `at` comes from the caller's clock.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::events::{CompensationRule, DoorStatus, ReissueMode};
use crate::{Actor, Money};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DoorCommand {
    /// Adds a door. `door_uid` is the id in URLs (today the lock id as text);
    /// `lock_id` is TTLock's numeric `lockId`.
    RegisterDoor {
        door_uid: String,
        lock_id: i64,
        name: String,
        location: String,
        /// IANA name such as `Europe/Paris`, used by reports; validated by the caller.
        time_zone: String,
        price: Money,
        access_minutes: u32,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// Changes any of the given fields; `None` keeps the current value.
    UpdateDoor {
        name: Option<String>,
        location: Option<String>,
        time_zone: Option<String>,
        price: Option<Money>,
        access_minutes: Option<u32>,
        actor: Actor,
        at: DateTime<Utc>,
    },
    SetDoorStatus {
        status: DoorStatus,
        reason: String,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// Allows (or stops) the fallback to a random period code when the lock's gateway is
    /// not working; see [`DoorEvent::DoorOfflineFallbackChanged`](super::DoorEvent).
    SetOfflineFallback {
        enabled: bool,
        actor: Actor,
        at: DateTime<Utc>,
    },
    RecordPassageMode {
        enabled: bool,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// Issues the payment's code, valid from `at` for the door's access duration, or
    /// retries a failed attempt. A payment with a live code gets no second one.
    IssueAccessCode {
        payment_id: Uuid,
        actor: Actor,
        at: DateTime<Utc>,
        /// The access minutes locked at checkout. The first attempt records them
        /// (`AccessCodeRequested.access_minutes`) and every later attempt reuses that; `None`
        /// (a payment from before offers were locked) means the door's current minutes.
        #[serde(default)]
        locked_minutes: Option<u32>,
    },
    /// Deletes the payment's code from the lock (after a refund, or by an operator). For a
    /// payment with no code yet, records the revocation so none is ever issued.
    RevokeAccessCode {
        payment_id: Uuid,
        reason: String,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// Deletes any passcode the lock holds under this payment's name while the journal
    /// knows of no live one: an issue attempt whose answer never reached the journal (a
    /// crash after TTLock's answer) may have left one. Sent after a compensation and after
    /// a revocation that found no recorded code. Refused with `LockUnreachable` (try again
    /// later) when TTLock cannot be asked.
    RemoveStrayPasscodes {
        payment_id: Uuid,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// Housekeeping: marks every code whose window ended by `at` as expired.
    ExpireAccessCodes { actor: Actor, at: DateTime<Utc> },
    /// Decides that a paid guest without a code is refunded instead (sent by the door
    /// workflow). Changes nothing when the payment's code is live, or was revoked, expired
    /// or already compensated: the guest was served or made whole already.
    CompensateAccess {
        payment_id: Uuid,
        rule: CompensationRule,
        /// The refund request the workflow will order (recorded with the decision).
        refund_request_id: Uuid,
        paid_at: Option<DateTime<Utc>>,
        deadline_seconds: u64,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// An operator's "retry" or "reissue" of a payment's code; see [`ReissueMode`].
    ReissueAccessCode {
        payment_id: Uuid,
        mode: ReissueMode,
        /// The minutes locked at checkout, for a payment whose code was never requested.
        locked_minutes: Option<u32>,
        actor: Actor,
        at: DateTime<Utc>,
    },
}
