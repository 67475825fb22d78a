//! The Device aggregate: a relay-driven device guests pay to use, and the consistency
//! boundary for "at most one session holds the relay".
//!
//! Rules:
//! - Only the Device decides who holds the relay. `ReserveDevice` answers
//!   `DeviceReserved` when it is free or `DeviceReservationQueued` when it is busy; a
//!   queued session starts only when `ReleaseDevice` (or the end of maintenance) promotes it
//!   with `DeviceReserved { from_queue: true }` in the same command. Because both decisions
//!   happen in this one aggregate, under optimistic concurrency, two sessions never hold
//!   the relay at once.
//! - Maintenance refuses new sessions. Sessions already queued keep their place; none is
//!   promoted until maintenance ends.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::commands::DeviceCommand;
use super::error::DeviceError;
use super::events::{DeviceEvent, DeviceStatus, UsagePlan};
use super::services::{DeviceServices, RelayCommand, RelayTarget};
use crate::session::MAX_PLAN_MINUTES;
use crate::Actor;

/// Sessions that may wait for one device. Each is a guest who paid and is waiting, so a
/// long queue means hours of waiting; past this, new checkouts are refused instead.
pub const MAX_QUEUE_LENGTH: usize = 10;

/// Plans per device: enough for any real price list, small enough for one page.
pub const MAX_PLANS: usize = 20;

/// The device-side timer of a relay switched ON by hand (an operator, not a session):
/// long enough for maintenance, short enough that a forgotten relay goes off by itself.
/// Once it has run out the relay is again the sweep's to correct.
pub const MANUAL_ON_AUTO_OFF_SECONDS: u64 = 4 * 60 * 60;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Device {
    profile: Option<DeviceProfile>,
    plans: Vec<UsagePlan>,
    status: DeviceStatus,
    holder: Option<Reservation>,
    /// Paid sessions waiting, first in line first.
    queue: Vec<Reservation>,
    /// What the relay reported after the last switch by hand.
    relay_is_on: Option<bool>,
    /// Until when a relay switched ON by hand is deliberately ON (its device timer).
    #[serde(default)]
    manual_on_until: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct DeviceProfile {
    device_uid: String,
    name: String,
    location: String,
    time_zone: String,
    shelly_device_id: String,
    shelly_channel: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Reservation {
    session_id: Uuid,
    payment_id: Uuid,
    since: DateTime<Utc>,
}

impl Aggregate for Device {
    const TYPE: &'static str = "Device";
    type Command = DeviceCommand;
    type Event = DeviceEvent;
    type Error = DeviceError;
    type Services = DeviceServices;

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
            DeviceEvent::DeviceRegistered {
                device_uid,
                name,
                location,
                time_zone,
                shelly_device_id,
                shelly_channel,
                plans,
                ..
            } => {
                self.profile = Some(DeviceProfile {
                    device_uid,
                    name,
                    location,
                    time_zone,
                    shelly_device_id,
                    shelly_channel,
                });
                self.plans = plans;
            }
            DeviceEvent::DeviceDetailsChanged {
                name,
                location,
                time_zone,
                shelly_device_id,
                shelly_channel,
                ..
            } => {
                if let Some(profile) = &mut self.profile {
                    profile.name = name;
                    profile.location = location;
                    profile.time_zone = time_zone;
                    profile.shelly_device_id = shelly_device_id;
                    profile.shelly_channel = shelly_channel;
                }
            }
            DeviceEvent::DevicePlansChanged { plans, .. } => self.plans = plans,
            DeviceEvent::DeviceMaintenanceStarted { .. } => self.status = DeviceStatus::Maintenance,
            DeviceEvent::DeviceMaintenanceEnded { .. } => self.status = DeviceStatus::Active,
            DeviceEvent::DeviceReserved {
                session_id,
                payment_id,
                at,
                ..
            } => {
                debug_assert!(
                    self.holder.is_none(),
                    "two sessions may never hold a device"
                );
                self.queue.retain(|queued| queued.session_id != session_id);
                self.holder = Some(Reservation {
                    session_id,
                    payment_id,
                    since: at,
                });
            }
            DeviceEvent::DeviceReservationQueued {
                session_id,
                payment_id,
                at,
                ..
            } => self.queue.push(Reservation {
                session_id,
                payment_id,
                since: at,
            }),
            DeviceEvent::DeviceReleased { session_id, .. } => {
                debug_assert_eq!(self.holder_session(), Some(session_id));
                self.holder = None;
            }
            DeviceEvent::QueuedSessionWithdrawn { session_id, .. } => {
                self.queue.retain(|queued| queued.session_id != session_id);
            }
            DeviceEvent::RelaySwitched { on, is_on, at, .. } => {
                self.relay_is_on = Some(is_on);
                self.manual_on_until = (on && is_on)
                    .then(|| at + chrono::Duration::seconds(MANUAL_ON_AUTO_OFF_SECONDS as i64));
            }
        }
    }
}

/// Read accessors for the application.
impl Device {
    pub fn is_registered(&self) -> bool {
        self.profile.is_some()
    }

    pub fn status(&self) -> DeviceStatus {
        self.status
    }

    /// Whether a checkout may start: registered, not in maintenance, queue not full.
    pub fn is_accepting_sessions(&self) -> bool {
        self.is_registered()
            && self.status == DeviceStatus::Active
            && self.queue.len() < MAX_QUEUE_LENGTH
    }

    pub fn device_uid(&self) -> Option<&str> {
        self.profile.as_ref().map(|p| p.device_uid.as_str())
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

    pub fn relay_target(&self) -> Option<RelayTarget> {
        self.profile.as_ref().map(|p| RelayTarget {
            shelly_device_id: p.shelly_device_id.clone(),
            channel: p.shelly_channel,
        })
    }

    pub fn plans(&self) -> &[UsagePlan] {
        &self.plans
    }

    pub fn plan(&self, plan_id: &str) -> Option<&UsagePlan> {
        self.plans.iter().find(|plan| plan.plan_id == plan_id)
    }

    /// The session holding the relay, if any.
    pub fn holder_session(&self) -> Option<Uuid> {
        self.holder.as_ref().map(|holder| holder.session_id)
    }

    /// Sessions waiting, next first.
    pub fn queued_sessions(&self) -> Vec<Uuid> {
        self.queue.iter().map(|queued| queued.session_id).collect()
    }

    pub fn relay_is_on(&self) -> Option<bool> {
        self.relay_is_on
    }

    /// Whether an operator's manual ON still stands at `now`: the sweep leaves such a relay
    /// alone until its device timer ([`MANUAL_ON_AUTO_OFF_SECONDS`]) has run out.
    pub fn manual_on_stands_at(&self, now: DateTime<Utc>) -> bool {
        self.manual_on_until.is_some_and(|until| now < until)
    }

    /// The longest session a plan of this device sells, in minutes (the device-side
    /// auto-off must cover it).
    pub fn longest_plan_minutes(&self) -> Option<u32> {
        self.plans.iter().map(|plan| plan.minutes).max()
    }
}

/// Deciding.
impl Device {
    async fn decide(
        &self,
        command: DeviceCommand,
        services: &DeviceServices,
    ) -> Result<Vec<DeviceEvent>, DeviceError> {
        match command {
            DeviceCommand::RegisterDevice {
                device_uid,
                name,
                location,
                time_zone,
                shelly_device_id,
                shelly_channel,
                plans,
                actor,
                at,
            } => {
                let profile = DeviceProfile {
                    device_uid,
                    name,
                    location,
                    time_zone,
                    shelly_device_id,
                    shelly_channel,
                };
                self.register(profile, plans, actor, at)
            }
            DeviceCommand::UpdateDevice {
                name,
                location,
                time_zone,
                shelly_device_id,
                shelly_channel,
                actor,
                at,
            } => {
                let current = self.registered()?;
                let next = DeviceProfile {
                    device_uid: current.device_uid.clone(),
                    name: name.unwrap_or_else(|| current.name.clone()),
                    location: location.unwrap_or_else(|| current.location.clone()),
                    time_zone: time_zone.unwrap_or_else(|| current.time_zone.clone()),
                    shelly_device_id: shelly_device_id
                        .unwrap_or_else(|| current.shelly_device_id.clone()),
                    shelly_channel: shelly_channel.unwrap_or(current.shelly_channel),
                };
                self.update(next, actor, at)
            }
            DeviceCommand::ChangePlans { plans, actor, at } => {
                self.registered()?;
                validate_plans(&plans)?;
                if plans == self.plans {
                    return Ok(vec![]);
                }
                Ok(vec![DeviceEvent::DevicePlansChanged { plans, actor, at }])
            }
            DeviceCommand::SetDeviceStatus {
                status,
                reason,
                actor,
                at,
            } => self.set_status(status, reason, actor, at),
            DeviceCommand::ReserveDevice {
                session_id,
                payment_id,
                at,
                ..
            } => self.reserve(session_id, payment_id, at),
            DeviceCommand::ReleaseDevice { session_id, at, .. } => self.release(session_id, at),
            DeviceCommand::SwitchRelay {
                on,
                reason,
                actor,
                at,
            } => self.switch_relay(on, reason, actor, at, services).await,
        }
    }

    fn register(
        &self,
        profile: DeviceProfile,
        plans: Vec<UsagePlan>,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<Vec<DeviceEvent>, DeviceError> {
        if let Some(existing) = &self.profile {
            if *existing == profile && plans == self.plans {
                return Ok(vec![]);
            }
            return Err(DeviceError::AlreadyRegistered {
                device_uid: existing.device_uid.clone(),
            });
        }
        validate_profile(&profile)?;
        validate_plans(&plans)?;
        Ok(vec![DeviceEvent::DeviceRegistered {
            device_uid: profile.device_uid,
            name: profile.name,
            location: profile.location,
            time_zone: profile.time_zone,
            shelly_device_id: profile.shelly_device_id,
            shelly_channel: profile.shelly_channel,
            plans,
            actor,
            at,
        }])
    }

    fn update(
        &self,
        next: DeviceProfile,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<Vec<DeviceEvent>, DeviceError> {
        validate_profile(&next)?;
        if self.profile.as_ref() == Some(&next) {
            return Ok(vec![]);
        }
        Ok(vec![DeviceEvent::DeviceDetailsChanged {
            name: next.name,
            location: next.location,
            time_zone: next.time_zone,
            shelly_device_id: next.shelly_device_id,
            shelly_channel: next.shelly_channel,
            actor,
            at,
        }])
    }

    fn set_status(
        &self,
        status: DeviceStatus,
        reason: String,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<Vec<DeviceEvent>, DeviceError> {
        self.registered()?;
        if status == self.status {
            return Ok(vec![]);
        }
        match status {
            DeviceStatus::Maintenance => Ok(vec![DeviceEvent::DeviceMaintenanceStarted {
                reason,
                actor,
                at,
            }]),
            DeviceStatus::Active => {
                let mut events = vec![DeviceEvent::DeviceMaintenanceEnded { reason, actor, at }];
                if self.holder.is_none() {
                    events.extend(self.promote_next(at));
                }
                Ok(events)
            }
        }
    }

    fn reserve(
        &self,
        session_id: Uuid,
        payment_id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<Vec<DeviceEvent>, DeviceError> {
        let profile = self.registered()?;
        let already_known = self.holder_session() == Some(session_id)
            || self
                .queue
                .iter()
                .any(|queued| queued.session_id == session_id);
        if already_known {
            return Ok(vec![]);
        }
        if self.status == DeviceStatus::Maintenance {
            return Err(DeviceError::InMaintenance {
                device_uid: profile.device_uid.clone(),
            });
        }
        if self.holder.is_none() && self.queue.is_empty() {
            return Ok(vec![DeviceEvent::DeviceReserved {
                session_id,
                payment_id,
                from_queue: false,
                at,
            }]);
        }
        if self.queue.len() >= MAX_QUEUE_LENGTH {
            return Err(DeviceError::QueueFull {
                device_uid: profile.device_uid.clone(),
                limit: MAX_QUEUE_LENGTH,
            });
        }
        // A free device with sessions still waiting cannot arise from the rules above, but
        // if it ever did, the first in line starts now rather than waiting for a release
        // that would never come; the newcomer queues behind the rest.
        let mut events = Vec::new();
        if self.holder.is_none() {
            events.extend(self.promote_next(at));
        }
        let ahead = self.queue.len().saturating_sub(events.len());
        let position = u32::try_from(ahead + 1).unwrap_or(u32::MAX);
        events.push(DeviceEvent::DeviceReservationQueued {
            session_id,
            payment_id,
            position,
            at,
        });
        Ok(events)
    }

    fn release(
        &self,
        session_id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<Vec<DeviceEvent>, DeviceError> {
        self.registered()?;
        if self.holder_session() == Some(session_id) {
            let mut events = vec![DeviceEvent::DeviceReleased { session_id, at }];
            if self.status == DeviceStatus::Active {
                events.extend(self.promote_next(at));
            }
            return Ok(events);
        }
        if self
            .queue
            .iter()
            .any(|queued| queued.session_id == session_id)
        {
            return Ok(vec![DeviceEvent::QueuedSessionWithdrawn { session_id, at }]);
        }
        // Released already (a workflow saw the same end twice): nothing left to do.
        Ok(vec![])
    }

    /// The next queued session takes the relay, if there is one.
    fn promote_next(&self, at: DateTime<Utc>) -> Option<DeviceEvent> {
        self.queue.first().map(|next| DeviceEvent::DeviceReserved {
            session_id: next.session_id,
            payment_id: next.payment_id,
            from_queue: true,
            at,
        })
    }

    async fn switch_relay(
        &self,
        on: bool,
        reason: String,
        actor: Actor,
        at: DateTime<Utc>,
        services: &DeviceServices,
    ) -> Result<Vec<DeviceEvent>, DeviceError> {
        let profile = self.registered()?;
        let command = RelayCommand {
            shelly_device_id: profile.shelly_device_id.clone(),
            channel: profile.shelly_channel,
            on,
            // A manual ON carries its own timer, so a forgotten relay goes off by itself.
            auto_off_seconds: on.then_some(MANUAL_ON_AUTO_OFF_SECONDS),
        };
        let outcome =
            services
                .relay
                .switch(command)
                .await
                .map_err(|error| DeviceError::RelayFailed {
                    device_uid: profile.device_uid.clone(),
                    message: error.message,
                })?;
        Ok(vec![DeviceEvent::RelaySwitched {
            on,
            is_on: outcome.is_on,
            reason,
            actor,
            at,
        }])
    }

    fn registered(&self) -> Result<&DeviceProfile, DeviceError> {
        self.profile.as_ref().ok_or(DeviceError::NotRegistered)
    }
}

fn validate_profile(profile: &DeviceProfile) -> Result<(), DeviceError> {
    let invalid = |reason: &str| {
        Err(DeviceError::InvalidDevice {
            reason: reason.to_owned(),
        })
    };
    if profile.device_uid.trim().is_empty() {
        return invalid("the device uid must not be empty");
    }
    if profile.name.trim().is_empty() {
        return invalid("the name must not be empty");
    }
    if profile.time_zone.trim().is_empty() {
        return invalid("the time zone must not be empty");
    }
    if profile.shelly_device_id.trim().is_empty() {
        return invalid("the Shelly device id must not be empty");
    }
    Ok(())
}

fn validate_plans(plans: &[UsagePlan]) -> Result<(), DeviceError> {
    let invalid = |reason: String| Err(DeviceError::InvalidDevice { reason });
    if plans.is_empty() || plans.len() > MAX_PLANS {
        return invalid(format!(
            "a device needs between 1 and {MAX_PLANS} plans, not {}",
            plans.len()
        ));
    }
    for (index, plan) in plans.iter().enumerate() {
        if plan.plan_id.trim().is_empty() || plan.name.trim().is_empty() {
            return invalid("every plan needs an id and a name".to_owned());
        }
        if plans[..index]
            .iter()
            .any(|other| other.plan_id == plan.plan_id)
        {
            return invalid(format!("plan id {} is used twice", plan.plan_id));
        }
        if plan.minutes == 0 || plan.minutes > MAX_PLAN_MINUTES {
            return invalid(format!(
                "plan {} must last between 1 and {MAX_PLAN_MINUTES} minutes, not {}",
                plan.plan_id, plan.minutes
            ));
        }
        if !plan.price.is_positive() {
            return invalid(format!(
                "plan {} must have a positive price, not {}",
                plan.plan_id, plan.price
            ));
        }
    }
    Ok(())
}
