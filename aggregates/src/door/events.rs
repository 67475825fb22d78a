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
    /// No code could be issued in time: the guest is refunded instead and none will ever
    /// be issued for this payment ([`DoorEvent::AccessCompensationDecided`]).
    Compensated,
}

/// Why a paid guest who got no code is made whole: the rule of an
/// [`DoorEvent::AccessCompensationDecided`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompensationRule {
    /// The access deadline passed after payment without a code on the lock (the door in
    /// maintenance, TTLock or the lock's gateway offline).
    DeadlinePassed,
    /// TTLock refused every attempt up to the workflow's limit.
    IssueAttemptsExhausted,
    /// TTLock refused the code in a way no retry can change.
    IssueRefused,
}

impl CompensationRule {
    /// The reason in words, as the guest page and the refund's reason show it.
    pub fn describe(self) -> &'static str {
        match self {
            Self::DeadlinePassed => "no door code could be issued in time after payment",
            Self::IssueAttemptsExhausted => {
                "the lock did not accept a door code after repeated attempts"
            }
            Self::IssueRefused => "the lock refused the door code",
        }
    }
}

/// What an operator's [`DoorCommand::ReissueAccessCode`](super::DoorCommand) may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReissueMode {
    /// Try again a code that is not live (failed, or never requested because the door was
    /// in maintenance); refused for a live code.
    Retry,
    /// Give the guest a new code: a live one is deleted from the lock first (where the lock
    /// allows it) and the new one keeps the old window's end.
    Replace,
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
    /// A paid guest got no code and is refunded instead (issue 14). The rule and the inputs
    /// it was decided on are kept, so the audit log says why; the workflow then orders the
    /// refund `refund_request_id` on the payment. No code is issued for the payment after
    /// this.
    AccessCompensationDecided {
        payment_id: Uuid,
        rule: CompensationRule,
        refund_request_id: Uuid,
        /// The door's status when deciding (`maintenance` explains most deadline misses).
        door_status: DoorStatus,
        /// The code's state before the decision; `None` when none was ever requested.
        code_state: Option<AccessCodeState>,
        issue_attempts: u32,
        last_error: Option<String>,
        /// When the payment succeeded and how long a code may take after that.
        paid_at: Option<DateTime<Utc>>,
        deadline_seconds: u64,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// An operator asked for the payment's code again; the attempt follows in the same
    /// command (numbered from 1 again). A live code was deleted first when
    /// `previous_deleted`; one the lock keeps offline opens until `previous_still_valid_until`.
    AccessCodeReissueRequested {
        payment_id: Uuid,
        mode: ReissueMode,
        previous_passcode_id: Option<i64>,
        previous_deleted: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous_still_valid_until: Option<DateTime<Utc>>,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// Passcodes named for this payment were found on the lock although the journal knew
    /// of no live one (an issue attempt whose answer was lost to a crash), and deleted.
    StrayPasscodesRemoved {
        payment_id: Uuid,
        count: u32,
        actor: Actor,
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
            Self::AccessCompensationDecided { .. } => "AccessCompensationDecided",
            Self::AccessCodeReissueRequested { .. } => "AccessCodeReissueRequested",
            Self::StrayPasscodesRemoved { .. } => "StrayPasscodesRemoved",
        };
        name.to_owned()
    }

    fn event_version(&self) -> String {
        crate::EVENT_VERSION.to_owned()
    }
}
