//! Why a door command was refused.

use chrono::{DateTime, Utc};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DoorError {
    #[error("this door is not registered; register it first")]
    NotRegistered,
    #[error("door {door_uid} is already registered; update it instead")]
    AlreadyRegistered { door_uid: String },
    #[error("the door is invalid: {reason}")]
    InvalidDoor { reason: String },
    #[error(
        "door {door_uid} is in maintenance; no access code can be issued until it is active again"
    )]
    InMaintenance { door_uid: String },
    #[error("the access code for payment {payment_id} was revoked; no new code is issued for it")]
    AccessCodeRevoked { payment_id: Uuid },
    #[error("the access code for payment {payment_id} expired at {valid_to}; no new code is issued for it")]
    AccessCodeExpired {
        payment_id: Uuid,
        valid_to: DateTime<Utc>,
    },
    #[error("no code could be issued for payment {payment_id}; the guest is refunded instead")]
    AccessCompensated { payment_id: Uuid },
    #[error("the code for payment {payment_id} is live; reissue it to replace it")]
    AccessCodeLive { payment_id: Uuid },
    #[error("the old code for payment {payment_id} could not be deleted from the lock ({reason}); nothing was changed, try again")]
    PreviousCodeNotDeleted { payment_id: Uuid, reason: String },
    #[error("TTLock could not be asked about the lock's codes for payment {payment_id} ({reason}); try again later")]
    LockUnreachable { payment_id: Uuid, reason: String },
    #[error("issuing a code for payment {payment_id} failed {attempts} times; check the lock in TTLock and refund the payment")]
    IssueAttemptsExhausted { payment_id: Uuid, attempts: u32 },
}
