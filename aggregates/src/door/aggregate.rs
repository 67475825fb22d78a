//! The Door aggregate: a TTLock lock guests pay to open, and the access code of each payment.
//!
//! Rules:
//! - A door in maintenance issues no code: `IssueAccessCode` is refused with
//!   [`DoorError::InMaintenance`] rather than left waiting, so the workflow sees the refusal
//!   at once and can retry after maintenance ends or refund the guest. Checkouts for a door
//!   in maintenance should be refused by the application before any money moves
//!   ([`Door::is_accepting_payments`]). Revoking always works, maintenance or not.
//! - One payment has at most one live code. Asking again for a payment whose code is live
//!   changes nothing; a revoked or expired payment never gets a new one.
//! - Each attempt asks for a window starting at that attempt's `at`, so a guest whose code
//!   was delayed by a TTLock outage still gets the full access duration.
//! - A paid guest whose code cannot be issued is compensated (refunded) instead, once:
//!   `CompensateAccess` records the rule and its inputs, and afterwards no code is issued
//!   for that payment. A live, revoked or expired code is never compensated.
//! - An operator may retry a code that is not live (even past the attempt limit) or
//!   replace a live one; a replacement deletes the old code first where the lock allows it
//!   and keeps the old window's end.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::commands::DoorCommand;
use super::error::DoorError;
use super::events::{
    AccessCodeState, CodeFallback, CompensationRule, DoorEvent, DoorStatus, ReissueMode,
};
use super::services::{DoorServices, PasscodeRequest};
use crate::{Actor, Money};

/// Attempts to issue one payment's code before the door gives up and asks for an operator.
/// With the workflow's backoff this spans a long TTLock outage, yet a broken lock cannot be
/// hammered forever.
pub const MAX_ISSUE_ATTEMPTS: u32 = 10;

/// The longest access a door may sell: one week. Longer windows are almost certainly a
/// unit mistake (minutes typed as seconds).
pub const MAX_ACCESS_MINUTES: u32 = 7 * 24 * 60;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Door {
    profile: Option<DoorProfile>,
    status: DoorStatus,
    /// `None` until TTLock has been asked at least once.
    passage_mode_enabled: Option<bool>,
    /// A paid guest may get a random period code while the lock's gateway is not working.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    offline_fallback: bool,
    access_codes: BTreeMap<Uuid, AccessCode>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct DoorProfile {
    door_uid: String,
    lock_id: i64,
    name: String,
    location: String,
    time_zone: String,
    price: Money,
    access_minutes: u32,
}

/// One payment's access code, as the application may show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessCode {
    pub payment_id: Uuid,
    pub state: AccessCodeState,
    pub passcode_id: Option<i64>,
    pub code: Option<String>,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_to: Option<DateTime<Utc>>,
    pub remotely_revocable: bool,
    pub issue_attempts: u32,
    pub revocation_attempts: u32,
    pub last_error: Option<String>,
    /// Set by a revocation that could only delete the cloud record: the code still opens
    /// the door until then.
    #[serde(default)]
    pub still_valid_until: Option<DateTime<Utc>>,
    /// The access minutes recorded with the request: what the guest bought.
    #[serde(default)]
    pub access_minutes: Option<u32>,
    /// Why the guest was refunded instead, once the state is `Compensated`.
    #[serde(default)]
    pub compensation: Option<CompensationRule>,
    /// Set when the code is a random period code given because the lock's gateway was not
    /// working (whole hours, not remotely revocable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<CodeFallback>,
}

impl AccessCode {
    fn requested(payment_id: Uuid) -> Self {
        Self {
            payment_id,
            state: AccessCodeState::Requested,
            passcode_id: None,
            code: None,
            valid_from: None,
            valid_to: None,
            remotely_revocable: false,
            still_valid_until: None,
            issue_attempts: 0,
            revocation_attempts: 0,
            last_error: None,
            access_minutes: None,
            compensation: None,
            fallback: None,
        }
    }
}

impl Aggregate for Door {
    const TYPE: &'static str = "Door";
    type Command = DoorCommand;
    type Event = DoorEvent;
    type Error = DoorError;
    type Services = DoorServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let events = self.decide(command, services).await?;
        for event in events {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            DoorEvent::DoorRegistered {
                door_uid,
                lock_id,
                name,
                location,
                time_zone,
                price,
                access_minutes,
                ..
            } => {
                self.profile = Some(DoorProfile {
                    door_uid,
                    lock_id,
                    name,
                    location,
                    time_zone,
                    price,
                    access_minutes,
                });
            }
            DoorEvent::DoorDetailsChanged {
                name,
                location,
                time_zone,
                access_minutes,
                ..
            } => {
                if let Some(profile) = &mut self.profile {
                    profile.name = name;
                    profile.location = location;
                    profile.time_zone = time_zone;
                    profile.access_minutes = access_minutes;
                }
            }
            DoorEvent::DoorPriceChanged { price, .. } => {
                if let Some(profile) = &mut self.profile {
                    profile.price = price;
                }
            }
            DoorEvent::DoorMaintenanceStarted { .. } => self.status = DoorStatus::Maintenance,
            DoorEvent::DoorMaintenanceEnded { .. } => self.status = DoorStatus::Active,
            DoorEvent::PassageModeObserved { enabled, .. } => {
                self.passage_mode_enabled = Some(enabled);
            }
            DoorEvent::DoorOfflineFallbackChanged { enabled, .. } => {
                self.offline_fallback = enabled;
            }
            DoorEvent::AccessCodeRequested {
                payment_id,
                access_minutes,
                ..
            } => {
                let mut access = AccessCode::requested(payment_id);
                access.access_minutes = Some(access_minutes);
                self.access_codes.insert(payment_id, access);
            }
            DoorEvent::AccessCodeIssued {
                payment_id,
                attempt,
                passcode_id,
                code,
                valid_from,
                valid_to,
                remotely_revocable,
                fallback,
                ..
            } => {
                let access = self.code_entry(payment_id);
                access.state = AccessCodeState::Issued;
                access.fallback = fallback;
                access.issue_attempts = attempt;
                access.passcode_id = Some(passcode_id);
                access.code = Some(code);
                access.valid_from = Some(valid_from);
                access.valid_to = Some(valid_to);
                access.remotely_revocable = remotely_revocable;
                access.last_error = None;
            }
            DoorEvent::AccessCodeIssueFailed {
                payment_id,
                attempt,
                reason,
                ..
            } => {
                let access = self.code_entry(payment_id);
                access.state = AccessCodeState::Failed;
                access.issue_attempts = attempt;
                access.last_error = Some(reason);
            }
            DoorEvent::AccessCodeRevoked {
                payment_id,
                still_valid_until,
                ..
            } => {
                let access = self.code_entry(payment_id);
                access.state = AccessCodeState::Revoked;
                access.last_error = None;
                access.still_valid_until = still_valid_until;
            }
            DoorEvent::AccessCodeRevocationPending {
                payment_id,
                attempt,
                error,
                ..
            } => {
                let access = self.code_entry(payment_id);
                access.state = AccessCodeState::RevocationPending;
                access.revocation_attempts = attempt;
                access.last_error = Some(error);
            }
            DoorEvent::AccessCodeExpired { payment_id, .. } => {
                self.code_entry(payment_id).state = AccessCodeState::Expired;
            }
            DoorEvent::AccessCompensationDecided {
                payment_id, rule, ..
            } => {
                let access = self.code_entry(payment_id);
                access.state = AccessCodeState::Compensated;
                access.compensation = Some(rule);
            }
            DoorEvent::AccessCodeReissueRequested { payment_id, .. } => {
                let access = self.code_entry(payment_id);
                access.state = AccessCodeState::Requested;
                access.issue_attempts = 0;
                access.passcode_id = None;
                access.code = None;
                access.last_error = None;
            }
            // The lock lost codes nobody could use; the payment's own state is unchanged.
            DoorEvent::StrayPasscodesRemoved { .. } => {}
        }
    }
}

/// Read accessors for the application.
impl Door {
    pub fn is_registered(&self) -> bool {
        self.profile.is_some()
    }

    pub fn status(&self) -> DoorStatus {
        self.status
    }

    /// Whether a checkout may start: registered and not in maintenance.
    pub fn is_accepting_payments(&self) -> bool {
        self.is_registered() && self.status == DoorStatus::Active
    }

    pub fn door_uid(&self) -> Option<&str> {
        self.profile.as_ref().map(|p| p.door_uid.as_str())
    }

    pub fn lock_id(&self) -> Option<i64> {
        self.profile.as_ref().map(|p| p.lock_id)
    }

    pub fn name(&self) -> Option<&str> {
        self.profile.as_ref().map(|p| p.name.as_str())
    }

    pub fn location(&self) -> Option<&str> {
        self.profile.as_ref().map(|p| p.location.as_str())
    }

    pub fn time_zone(&self) -> Option<&str> {
        self.profile.as_ref().map(|p| p.time_zone.as_str())
    }

    /// The price a checkout started now locks in.
    pub fn price(&self) -> Option<&Money> {
        self.profile.as_ref().map(|p| &p.price)
    }

    pub fn access_minutes(&self) -> Option<u32> {
        self.profile.as_ref().map(|p| p.access_minutes)
    }

    pub fn passage_mode_enabled(&self) -> Option<bool> {
        self.passage_mode_enabled
    }

    /// Whether a paid guest may get a random period code while the gateway is not working.
    pub fn offline_fallback(&self) -> bool {
        self.offline_fallback
    }

    pub fn access_code(&self, payment_id: Uuid) -> Option<&AccessCode> {
        self.access_codes.get(&payment_id)
    }

    pub fn access_codes(&self) -> impl Iterator<Item = &AccessCode> {
        self.access_codes.values()
    }

    fn code_entry(&mut self, payment_id: Uuid) -> &mut AccessCode {
        self.access_codes
            .entry(payment_id)
            .or_insert_with(|| AccessCode::requested(payment_id))
    }
}

/// Deciding.
impl Door {
    async fn decide(
        &self,
        command: DoorCommand,
        services: &DoorServices,
    ) -> Result<Vec<DoorEvent>, DoorError> {
        match command {
            DoorCommand::RegisterDoor {
                door_uid,
                lock_id,
                name,
                location,
                time_zone,
                price,
                access_minutes,
                actor,
                at,
            } => {
                let profile = DoorProfile {
                    door_uid,
                    lock_id,
                    name,
                    location,
                    time_zone,
                    price,
                    access_minutes,
                };
                self.register(profile, actor, at)
            }
            DoorCommand::UpdateDoor {
                name,
                location,
                time_zone,
                price,
                access_minutes,
                actor,
                at,
            } => {
                let changes = DoorChanges {
                    name,
                    location,
                    time_zone,
                    price,
                    access_minutes,
                };
                self.update(changes, actor, at)
            }
            DoorCommand::SetDoorStatus {
                status,
                reason,
                actor,
                at,
            } => self.set_status(status, reason, actor, at),
            DoorCommand::SetOfflineFallback { enabled, actor, at } => {
                self.registered()?;
                if self.offline_fallback == enabled {
                    return Ok(vec![]);
                }
                Ok(vec![DoorEvent::DoorOfflineFallbackChanged {
                    enabled,
                    actor,
                    at,
                }])
            }
            DoorCommand::RecordPassageMode { enabled, at, .. } => {
                self.registered()?;
                if self.passage_mode_enabled == Some(enabled) {
                    return Ok(vec![]);
                }
                Ok(vec![DoorEvent::PassageModeObserved { enabled, at }])
            }
            DoorCommand::IssueAccessCode {
                payment_id,
                at,
                locked_minutes,
                ..
            } => {
                self.issue_access_code(payment_id, at, locked_minutes, services)
                    .await
            }
            DoorCommand::RevokeAccessCode {
                payment_id,
                reason,
                actor,
                at,
            } => {
                let revocation = Revocation {
                    payment_id,
                    reason,
                    actor,
                    at,
                };
                self.revoke_access_code(revocation, services).await
            }
            DoorCommand::RemoveStrayPasscodes {
                payment_id,
                actor,
                at,
            } => {
                self.remove_stray_passcodes(payment_id, actor, at, services)
                    .await
            }
            DoorCommand::ExpireAccessCodes { at, .. } => {
                self.registered()?;
                Ok(self.expire_access_codes(at))
            }
            DoorCommand::CompensateAccess {
                payment_id,
                rule,
                refund_request_id,
                paid_at,
                deadline_seconds,
                actor,
                at,
            } => {
                let decision = Compensation {
                    payment_id,
                    rule,
                    refund_request_id,
                    paid_at,
                    deadline_seconds,
                    actor,
                    at,
                };
                self.compensate(decision)
            }
            DoorCommand::ReissueAccessCode {
                payment_id,
                mode,
                locked_minutes,
                actor,
                at,
            } => {
                let reissue = Reissue {
                    payment_id,
                    mode,
                    locked_minutes,
                    actor,
                    at,
                };
                self.reissue_access_code(reissue, services).await
            }
        }
    }

    fn register(
        &self,
        profile: DoorProfile,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<Vec<DoorEvent>, DoorError> {
        if let Some(existing) = &self.profile {
            if *existing == profile {
                return Ok(vec![]);
            }
            return Err(DoorError::AlreadyRegistered {
                door_uid: existing.door_uid.clone(),
            });
        }
        validate_profile(&profile)?;
        Ok(vec![DoorEvent::DoorRegistered {
            door_uid: profile.door_uid,
            lock_id: profile.lock_id,
            name: profile.name,
            location: profile.location,
            time_zone: profile.time_zone,
            price: profile.price,
            access_minutes: profile.access_minutes,
            actor,
            at,
        }])
    }

    fn update(
        &self,
        changes: DoorChanges,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<Vec<DoorEvent>, DoorError> {
        let current = self.registered()?;
        let next = DoorProfile {
            door_uid: current.door_uid.clone(),
            lock_id: current.lock_id,
            name: changes.name.unwrap_or_else(|| current.name.clone()),
            location: changes.location.unwrap_or_else(|| current.location.clone()),
            time_zone: changes
                .time_zone
                .unwrap_or_else(|| current.time_zone.clone()),
            price: changes.price.unwrap_or_else(|| current.price.clone()),
            access_minutes: changes.access_minutes.unwrap_or(current.access_minutes),
        };
        validate_profile(&next)?;
        let mut events = Vec::new();
        let details_changed = next.name != current.name
            || next.location != current.location
            || next.time_zone != current.time_zone
            || next.access_minutes != current.access_minutes;
        if details_changed {
            events.push(DoorEvent::DoorDetailsChanged {
                name: next.name,
                location: next.location,
                time_zone: next.time_zone,
                access_minutes: next.access_minutes,
                actor: actor.clone(),
                at,
            });
        }
        if next.price != current.price {
            events.push(DoorEvent::DoorPriceChanged {
                previous_price: current.price.clone(),
                price: next.price,
                actor,
                at,
            });
        }
        Ok(events)
    }

    fn set_status(
        &self,
        status: DoorStatus,
        reason: String,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<Vec<DoorEvent>, DoorError> {
        self.registered()?;
        if status == self.status {
            return Ok(vec![]);
        }
        let event = match status {
            DoorStatus::Maintenance => DoorEvent::DoorMaintenanceStarted { reason, actor, at },
            DoorStatus::Active => DoorEvent::DoorMaintenanceEnded { reason, actor, at },
        };
        Ok(vec![event])
    }

    async fn issue_access_code(
        &self,
        payment_id: Uuid,
        at: DateTime<Utc>,
        locked_minutes: Option<u32>,
        services: &DoorServices,
    ) -> Result<Vec<DoorEvent>, DoorError> {
        let profile = self.registered()?;
        let existing = self.access_codes.get(&payment_id);
        // What the guest bought: the minutes recorded with the first request, else those
        // locked at checkout, else (a payment older than locked offers) the door's own.
        let access_minutes = existing
            .and_then(|access| access.access_minutes)
            .or(locked_minutes)
            .unwrap_or(profile.access_minutes);
        if let Some(access) = existing {
            match access.state {
                AccessCodeState::Issued => return Ok(vec![]),
                AccessCodeState::Revoked | AccessCodeState::RevocationPending => {
                    return Err(DoorError::AccessCodeRevoked { payment_id })
                }
                AccessCodeState::Expired => {
                    return Err(DoorError::AccessCodeExpired {
                        payment_id,
                        valid_to: access.valid_to.unwrap_or(at),
                    })
                }
                AccessCodeState::Compensated => {
                    return Err(DoorError::AccessCompensated { payment_id })
                }
                AccessCodeState::Requested | AccessCodeState::Failed => {}
            }
        }
        if self.status == DoorStatus::Maintenance {
            return Err(DoorError::InMaintenance {
                door_uid: profile.door_uid.clone(),
            });
        }
        let attempts_so_far = existing.map_or(0, |access| access.issue_attempts);
        if attempts_so_far >= MAX_ISSUE_ATTEMPTS {
            return Err(DoorError::IssueAttemptsExhausted {
                payment_id,
                attempts: attempts_so_far,
            });
        }
        let mut events = Vec::new();
        if existing.is_none() {
            events.push(DoorEvent::AccessCodeRequested {
                payment_id,
                access_minutes,
                at,
            });
        }
        let window = Window {
            from: at,
            to: at + Duration::minutes(i64::from(access_minutes)),
        };
        events.push(
            attempt_issue(
                self.lock_of(profile),
                payment_id,
                attempts_so_far + 1,
                window,
                services,
            )
            .await,
        );
        Ok(events)
    }

    /// Deletes a live code before its replacement is issued; refuses (changing nothing)
    /// when the lock cannot delete it, or when its window is over.
    async fn delete_for_replacement(
        &self,
        profile: &DoorProfile,
        live: &AccessCode,
        at: DateTime<Utc>,
        services: &DoorServices,
    ) -> Result<Replaced, DoorError> {
        let payment_id = live.payment_id;
        let valid_to = live.valid_to.unwrap_or(at);
        if valid_to <= at {
            return Err(DoorError::AccessCodeExpired {
                payment_id,
                valid_to,
            });
        }
        let deleted = match live.passcode_id {
            Some(passcode_id) => {
                services
                    .locks
                    .delete_passcode(profile.lock_id, passcode_id)
                    .await
                    .map_err(|error| DoorError::PreviousCodeNotDeleted {
                        payment_id,
                        reason: error.message,
                    })?;
                true
            }
            None => false,
        };
        Ok(Replaced {
            valid_to,
            deleted,
            // A code the lock keeps offline outlives its cloud record.
            still_valid_until: (!live.remotely_revocable).then_some(valid_to),
        })
    }

    async fn remove_stray_passcodes(
        &self,
        payment_id: Uuid,
        actor: Actor,
        at: DateTime<Utc>,
        services: &DoorServices,
    ) -> Result<Vec<DoorEvent>, DoorError> {
        let profile = self.registered()?;
        // A code the journal knows is live is the guest's, not a stray: it is revoked (or
        // expires) by its own path.
        let state = self
            .access_codes
            .get(&payment_id)
            .map(|access| access.state);
        if matches!(
            state,
            Some(AccessCodeState::Issued | AccessCodeState::RevocationPending)
        ) {
            return Ok(vec![]);
        }
        let count = services
            .locks
            .delete_passcodes_named(profile.lock_id, &passcode_name(payment_id))
            .await
            .map_err(|error| DoorError::LockUnreachable {
                payment_id,
                reason: error.message,
            })?;
        if count == 0 {
            return Ok(vec![]);
        }
        Ok(vec![DoorEvent::StrayPasscodesRemoved {
            payment_id,
            count,
            actor,
            at,
        }])
    }

    fn compensate(&self, decision: Compensation) -> Result<Vec<DoorEvent>, DoorError> {
        self.registered()?;
        let access = self.access_codes.get(&decision.payment_id);
        let code_state = access.map(|access| access.state);
        match code_state {
            // Served, or made whole another way (a refund revokes; an expired code was
            // usable): nothing to compensate.
            Some(
                AccessCodeState::Issued
                | AccessCodeState::RevocationPending
                | AccessCodeState::Revoked
                | AccessCodeState::Expired
                | AccessCodeState::Compensated,
            ) => return Ok(vec![]),
            None | Some(AccessCodeState::Requested | AccessCodeState::Failed) => {}
        }
        Ok(vec![DoorEvent::AccessCompensationDecided {
            payment_id: decision.payment_id,
            rule: decision.rule,
            refund_request_id: decision.refund_request_id,
            door_status: self.status,
            code_state,
            issue_attempts: access.map_or(0, |access| access.issue_attempts),
            last_error: access.and_then(|access| access.last_error.clone()),
            paid_at: decision.paid_at,
            deadline_seconds: decision.deadline_seconds,
            actor: decision.actor,
            at: decision.at,
        }])
    }

    async fn reissue_access_code(
        &self,
        reissue: Reissue,
        services: &DoorServices,
    ) -> Result<Vec<DoorEvent>, DoorError> {
        let profile = self.registered()?;
        let Reissue {
            payment_id,
            mode,
            locked_minutes,
            actor,
            at,
        } = reissue;
        let existing = self.access_codes.get(&payment_id);
        let live = match existing.map(|access| access.state) {
            Some(AccessCodeState::Revoked | AccessCodeState::RevocationPending) => {
                return Err(DoorError::AccessCodeRevoked { payment_id })
            }
            Some(AccessCodeState::Expired) => {
                return Err(DoorError::AccessCodeExpired {
                    payment_id,
                    valid_to: existing.and_then(|access| access.valid_to).unwrap_or(at),
                })
            }
            Some(AccessCodeState::Compensated) => {
                return Err(DoorError::AccessCompensated { payment_id })
            }
            Some(AccessCodeState::Issued) if mode == ReissueMode::Retry => {
                return Err(DoorError::AccessCodeLive { payment_id })
            }
            Some(AccessCodeState::Issued) => existing,
            None | Some(AccessCodeState::Requested | AccessCodeState::Failed) => None,
        };
        if self.status == DoorStatus::Maintenance {
            return Err(DoorError::InMaintenance {
                door_uid: profile.door_uid.clone(),
            });
        }
        let access_minutes = existing
            .and_then(|access| access.access_minutes)
            .or(locked_minutes)
            .unwrap_or(profile.access_minutes);
        let mut window = Window {
            from: at,
            to: at + Duration::minutes(i64::from(access_minutes)),
        };
        let mut events = Vec::new();
        if existing.is_none() {
            events.push(DoorEvent::AccessCodeRequested {
                payment_id,
                access_minutes,
                at,
            });
        }
        let mut request = DoorEvent::AccessCodeReissueRequested {
            payment_id,
            mode,
            previous_passcode_id: None,
            previous_deleted: false,
            previous_still_valid_until: None,
            actor,
            at,
        };
        if let Some(live) = live {
            let replaced = self
                .delete_for_replacement(profile, live, at, services)
                .await?;
            // The replacement keeps what the guest has left, not a fresh window.
            window.to = replaced.valid_to;
            if let DoorEvent::AccessCodeReissueRequested {
                previous_passcode_id,
                previous_deleted,
                previous_still_valid_until,
                ..
            } = &mut request
            {
                *previous_passcode_id = live.passcode_id;
                *previous_deleted = replaced.deleted;
                *previous_still_valid_until = replaced.still_valid_until;
            }
        }
        events.push(request);
        events.push(attempt_issue(self.lock_of(profile), payment_id, 1, window, services).await);
        Ok(events)
    }

    async fn revoke_access_code(
        &self,
        revocation: Revocation,
        services: &DoorServices,
    ) -> Result<Vec<DoorEvent>, DoorError> {
        let profile = self.registered()?;
        let Revocation {
            payment_id,
            reason,
            actor,
            at,
        } = revocation;
        let access = self.access_codes.get(&payment_id);
        let live_passcode = match access.map(|access| (access.state, access.passcode_id)) {
            // A compensated payment never had a code on the lock and never will.
            Some((
                AccessCodeState::Revoked | AccessCodeState::Expired | AccessCodeState::Compensated,
                _,
            )) => return Ok(vec![]),
            Some((
                AccessCodeState::Issued | AccessCodeState::RevocationPending,
                Some(passcode_id),
            )) => Some(passcode_id),
            _ => None,
        };
        // Nothing exists on the lock: recording the revocation is enough, and it stops a
        // late `IssueAccessCode` (a success processed after its refund) from issuing one.
        let Some(passcode_id) = live_passcode else {
            return Ok(vec![DoorEvent::AccessCodeRevoked {
                payment_id,
                passcode_id: None,
                reason,
                actor,
                at,
                still_valid_until: None,
            }]);
        };
        let event = match services
            .locks
            .delete_passcode(profile.lock_id, passcode_id)
            .await
        {
            Ok(()) => DoorEvent::AccessCodeRevoked {
                payment_id,
                passcode_id: Some(passcode_id),
                reason,
                actor,
                at,
                // A code the lock keeps offline outlives its cloud record.
                still_valid_until: access
                    .filter(|access| !access.remotely_revocable)
                    .and_then(|access| access.valid_to)
                    .filter(|end| *end > at),
            },
            Err(error) => DoorEvent::AccessCodeRevocationPending {
                payment_id,
                passcode_id,
                reason,
                attempt: access.map_or(0, |access| access.revocation_attempts) + 1,
                error: error.message,
                actor,
                at,
            },
        };
        Ok(vec![event])
    }

    fn expire_access_codes(&self, at: DateTime<Utc>) -> Vec<DoorEvent> {
        self.access_codes
            .values()
            .filter(|access| {
                matches!(
                    access.state,
                    AccessCodeState::Issued | AccessCodeState::RevocationPending
                )
            })
            .filter_map(|access| match (access.passcode_id, access.valid_to) {
                (Some(passcode_id), Some(valid_to)) if valid_to <= at => {
                    Some(DoorEvent::AccessCodeExpired {
                        payment_id: access.payment_id,
                        passcode_id,
                        valid_to,
                        at,
                    })
                }
                _ => None,
            })
            .collect()
    }

    /// What an issue attempt needs to know about the lock.
    fn lock_of(&self, profile: &DoorProfile) -> LockTarget {
        LockTarget {
            lock_id: profile.lock_id,
            period_fallback: self.offline_fallback,
        }
    }

    fn registered(&self) -> Result<&DoorProfile, DoorError> {
        self.profile.as_ref().ok_or(DoorError::NotRegistered)
    }
}

/// An `UpdateDoor`'s optional fields.
struct DoorChanges {
    name: Option<String>,
    location: Option<String>,
    time_zone: Option<String>,
    price: Option<Money>,
    access_minutes: Option<u32>,
}

struct Revocation {
    payment_id: Uuid,
    reason: String,
    actor: Actor,
    at: DateTime<Utc>,
}

struct Compensation {
    payment_id: Uuid,
    rule: CompensationRule,
    refund_request_id: Uuid,
    paid_at: Option<DateTime<Utc>>,
    deadline_seconds: u64,
    actor: Actor,
    at: DateTime<Utc>,
}

struct Reissue {
    payment_id: Uuid,
    mode: ReissueMode,
    locked_minutes: Option<u32>,
    actor: Actor,
    at: DateTime<Utc>,
}

/// What deleting a live code before its replacement did.
struct Replaced {
    /// The old window's end, which the replacement keeps.
    valid_to: DateTime<Utc>,
    deleted: bool,
    still_valid_until: Option<DateTime<Utc>>,
}

/// The validity window one attempt asks TTLock for.
#[derive(Clone, Copy)]
struct Window {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

/// The name a payment's passcode carries on the lock (`keyboardPwdName`, shown in the
/// TTLock app): how a code whose issue answer was lost is found again.
fn passcode_name(payment_id: Uuid) -> String {
    format!("Latchkey {payment_id}")
}

/// The lock an issue attempt asks, and whether the door allows the period-code fallback.
#[derive(Clone, Copy)]
struct LockTarget {
    lock_id: i64,
    period_fallback: bool,
}

/// Asks TTLock for the payment's code; the outcome as the event that records it.
async fn attempt_issue(
    lock: LockTarget,
    payment_id: Uuid,
    attempt: u32,
    window: Window,
    services: &DoorServices,
) -> DoorEvent {
    let request = PasscodeRequest {
        lock_id: lock.lock_id,
        payment_id,
        name: passcode_name(payment_id),
        valid_from: window.from,
        valid_to: window.to,
        code: None,
        period_fallback: lock.period_fallback,
    };
    match services.locks.issue_passcode(request).await {
        Ok(issued) => DoorEvent::AccessCodeIssued {
            payment_id,
            attempt,
            passcode_id: issued.passcode_id,
            code: issued.code,
            valid_from: issued.valid_from,
            valid_to: issued.valid_to,
            remotely_revocable: issued.remotely_revocable,
            at: window.from,
            fallback: issued.fallback,
        },
        Err(error) => DoorEvent::AccessCodeIssueFailed {
            payment_id,
            attempt,
            retryable: error.is_retryable(),
            reason: error.message,
            at: window.from,
        },
    }
}

fn validate_profile(profile: &DoorProfile) -> Result<(), DoorError> {
    let invalid = |reason: String| Err(DoorError::InvalidDoor { reason });
    if profile.door_uid.trim().is_empty() {
        return invalid("the door uid must not be empty".to_owned());
    }
    if profile.name.trim().is_empty() {
        return invalid("the name must not be empty".to_owned());
    }
    if profile.time_zone.trim().is_empty() {
        return invalid("the time zone must not be empty".to_owned());
    }
    if !profile.price.is_positive() {
        return invalid(format!("the price must be positive, not {}", profile.price));
    }
    if profile.access_minutes == 0 || profile.access_minutes > MAX_ACCESS_MINUTES {
        return invalid(format!(
            "the access duration must be between 1 and {MAX_ACCESS_MINUTES} minutes, not {}",
            profile.access_minutes
        ));
    }
    Ok(())
}
