//! What happens to the system in one run, all drawn from the seed: the catalogue, the
//! guests and their fates, the operators' actions, and the faults.

use chrono::Duration;
use latchkey_aggregates::device::{DeviceCommand, DeviceStatus, UsagePlan};
use latchkey_aggregates::door::{DoorCommand, DoorStatus};
use latchkey_aggregates::payment::{PaymentCommand, PaymentStatus, PaymentTarget};
use latchkey_aggregates::session::SessionCommand;
use latchkey_aggregates::Actor;
use uuid::Uuid;

use crate::outside::{lock, DeviceFaults};
use crate::rng::Rng;
use crate::stripe::{IntentStatus, StripeFaults};
use crate::world::{new_lock, new_relay, price, Action, Guest, Refusal, World};

/// How long guests keep arriving; the rest of the run lets everything settle.
pub const ACTIVITY_MINUTES: i64 = 75;

pub fn stripe_faults(rng: &mut Rng) -> StripeFaults {
    let stormy = rng.chance(50);
    let level = |rng: &mut Rng, high: i64| if stormy { rng.range(0, high) as u32 } else { 0 };
    StripeFaults {
        unreachable: level(rng, 15),
        answer_lost: level(rng, 15),
        webhook_races_answer: level(rng, 50),
        capture_declined: level(rng, 10),
        refund_refused: level(rng, 10),
    }
}

pub fn device_faults(rng: &mut Rng) -> DeviceFaults {
    let stormy = rng.chance(50);
    let level = |rng: &mut Rng, high: i64| if stormy { rng.range(0, high) as u32 } else { 0 };
    DeviceFaults {
        answer_lost: level(rng, 15),
        refused: level(rng, 4),
        rate_limited: level(rng, 15),
    }
}

fn plans(device: usize) -> Vec<UsagePlan> {
    vec![
        UsagePlan {
            plan_id: "short".into(),
            name: "Short".into(),
            minutes: 5 + device as u32,
            price: price(150),
        },
        UsagePlan {
            plan_id: "long".into(),
            name: "Long".into(),
            minutes: 20,
            price: price(400),
        },
    ]
}

/// The catalogue and the timeline of one run.
pub fn setup(world: &mut World) {
    let at = world.now;
    for (index, lock_id) in [101_i64, 102].into_iter().enumerate() {
        let uid = lock_id.to_string();
        let has_gateway = index == 0 || world.rng.chance(70);
        lock(&world.ttlock)
            .locks
            .insert(lock_id, new_lock(has_gateway));
        let command = DoorCommand::RegisterDoor {
            door_uid: uid.clone(),
            lock_id,
            name: format!("Door {uid}"),
            location: "Harbour".into(),
            time_zone: "Europe/Berlin".into(),
            price: price(500 + 100 * index as i64),
            access_minutes: 60,
            actor: Actor::operator("setup"),
            at,
        };
        register(world, |world| world.door(&uid, command.clone()));
        world.doors.push((uid, lock_id));
    }
    for index in 0..2 {
        let uid = format!("washer-{index}");
        let shelly = format!("shelly{index}");
        lock(&world.shelly)
            .relays
            .insert((shelly.clone(), 0), new_relay());
        let command = DeviceCommand::RegisterDevice {
            device_uid: uid.clone(),
            name: format!("Washer {index}"),
            location: "Harbour".into(),
            time_zone: "Europe/Berlin".into(),
            shelly_device_id: shelly.clone(),
            shelly_channel: 0,
            plans: plans(index),
            actor: Actor::operator("setup"),
            at,
        };
        register(world, |world| world.device(&uid, command.clone()));
        world.devices.push((uid, shelly, plans(index)));
    }
    plan_timeline(world);
}

/// An operator whose registration failed (the process crashed before the append: the
/// request answered 500) sends it again, as a person at the dashboard would. Without
/// this, a device the crash left unregistered was counted as a relay ON with no paying
/// session that nothing in Latchkey could know of (seed 1450).
fn register<T>(world: &mut World, mut attempt: impl FnMut(&mut World) -> Result<T, Refusal>) {
    for _ in 0..10 {
        if !matches!(attempt(world), Err(Refusal::Crashed | Refusal::Conflict)) {
            return;
        }
    }
}

fn minute(rng: &mut Rng) -> i64 {
    rng.range(0, ACTIVITY_MINUTES * 60)
}

fn plan_timeline(world: &mut World) {
    let guests = world.rng.range(4, 12);
    for _ in 0..guests {
        let when = minute(&mut world.rng);
        let double_submit = world.rng.chance(10);
        let action = if world.rng.chance(50) {
            let door = world.doors[world.rng.pick(world.doors.len())].0.clone();
            Action::DoorCheckout {
                door,
                double_submit,
            }
        } else {
            let device = world.devices[world.rng.pick(world.devices.len())].0.clone();
            let plan = if world.rng.chance(50) {
                "short"
            } else {
                "long"
            };
            Action::DeviceCheckout {
                device,
                plan: plan.into(),
                double_submit,
            }
        };
        world.at(when, action);
    }
    let operator_actions = world.rng.range(0, 6);
    for _ in 0..operator_actions {
        let when = minute(&mut world.rng) + 300;
        let pick = world.rng.next_u64();
        let door = world.doors[world.rng.pick(world.doors.len())].0.clone();
        let device = world.devices[world.rng.pick(world.devices.len())].0.clone();
        let action = match world.rng.range(0, 7) {
            0 | 1 => Action::OperatorRefund {
                pick,
                partial: world.rng.chance(50),
                retry: None,
            },
            2 => Action::OperatorForceEnd { pick },
            3 => Action::DoorMaintenance { door, on: true },
            4 => Action::DeviceMaintenance { device, on: true },
            5 => Action::RemovePlan {
                device,
                plan: if world.rng.chance(50) {
                    "short".into()
                } else {
                    "long".into()
                },
            },
            _ => Action::DoorPrice {
                door,
                price: world.rng.range(300, 900),
            },
        };
        world.at(when, action);
    }
    let faults = world.rng.range(0, 8);
    for _ in 0..faults {
        let when = minute(&mut world.rng) + 60;
        let pick = world.rng.next_u64();
        let device = world.devices[world.rng.pick(world.devices.len())].0.clone();
        let action = match world.rng.range(0, 9) {
            0 => Action::ShellyOffline {
                device,
                seconds: world.rng.range(20, 180),
            },
            1 => Action::ShellyReboot { device },
            2 => Action::RelayBehindBack { device },
            3 => Action::TtlockOffline {
                seconds: world.rng.range(30, 300),
            },
            4 => Action::LapseAuthorization { pick },
            5 => Action::Dispute { pick },
            6 => Action::Crash,
            7 => Action::ClockJump {
                seconds: world.rng.range(30, 600),
            },
            _ => Action::ManualRelay { device, on: true },
        };
        world.at(when, action);
    }
}

impl World {
    pub fn perform(&mut self, action: Action) {
        self.trace.note(self.now, &format!("{action:?}"));
        match action {
            Action::DoorCheckout {
                door,
                double_submit,
            } => self.door_checkout(&door, double_submit),
            Action::DeviceCheckout {
                device,
                plan,
                double_submit,
            } => self.device_checkout(&device, &plan, double_submit),
            Action::GuestPays { payment } => {
                if let Some(intent) = self.intent_of(payment) {
                    lock(&self.stripe).pay(&intent);
                }
            }
            Action::GuestDeclined { payment, retries } => {
                if let Some(intent) = self.intent_of(payment) {
                    lock(&self.stripe).decline(&intent);
                }
                let next = if retries {
                    Action::GuestPays { payment }
                } else {
                    Action::CheckoutExpires { payment }
                };
                let delay = if retries {
                    self.rng.range(20, 90)
                } else {
                    1800
                };
                self.at(delay, next);
            }
            Action::CheckoutExpires { payment } => {
                if let Some(intent) = self.intent_of(payment) {
                    lock(&self.stripe).expire_checkout(&intent);
                }
            }
            Action::Deliver { event_id, attempt } => self.deliver(event_id, attempt),
            Action::OperatorRefund {
                pick,
                partial,
                retry,
            } => self.operator_refund(pick, partial, retry),
            Action::OperatorForceEnd { pick } => self.operator_force_end(pick),
            Action::DoorMaintenance { door, on } => {
                let status = if on {
                    DoorStatus::Maintenance
                } else {
                    DoorStatus::Active
                };
                let command = DoorCommand::SetDoorStatus {
                    status,
                    reason: "operator".into(),
                    actor: Actor::operator("op"),
                    at: self.now,
                };
                let _ = self.door(&door, command);
                if on {
                    let back = self.rng.range(60, 900);
                    self.at(back, Action::DoorMaintenance { door, on: false });
                }
            }
            Action::DeviceMaintenance { device, on } => {
                let status = if on {
                    DeviceStatus::Maintenance
                } else {
                    DeviceStatus::Active
                };
                let command = DeviceCommand::SetDeviceStatus {
                    status,
                    reason: "operator".into(),
                    actor: Actor::operator("op"),
                    at: self.now,
                };
                let _ = self.device(&device, command);
                if on {
                    let back = self.rng.range(60, 900);
                    self.at(back, Action::DeviceMaintenance { device, on: false });
                }
            }
            Action::RemovePlan { device, plan } => {
                let Some(index) = self.devices.iter().position(|(uid, _, _)| *uid == device) else {
                    return;
                };
                let plans: Vec<UsagePlan> = self.devices[index]
                    .2
                    .iter()
                    .filter(|p| p.plan_id != plan)
                    .cloned()
                    .collect();
                let command = DeviceCommand::ChangePlans {
                    plans,
                    actor: Actor::operator("op"),
                    at: self.now,
                };
                let _ = self.device(&device, command);
                // Half the time the plan is gone for good (a catalogue edit, not a pause).
                if self.rng.chance(50) {
                    let back = self.rng.range(120, 900);
                    self.at(back, Action::RestorePlans { device });
                }
            }
            Action::RestorePlans { device } => {
                let Some(index) = self.devices.iter().position(|(uid, _, _)| *uid == device) else {
                    return;
                };
                let plans = self.devices[index].2.clone();
                let command = DeviceCommand::ChangePlans {
                    plans,
                    actor: Actor::operator("op"),
                    at: self.now,
                };
                let _ = self.device(&device, command);
            }
            Action::DoorPrice {
                door,
                price: amount,
            } => {
                let command = DoorCommand::UpdateDoor {
                    name: None,
                    location: None,
                    time_zone: None,
                    price: Some(price(amount)),
                    access_minutes: None,
                    actor: Actor::operator("op"),
                    at: self.now,
                };
                let _ = self.door(&door, command);
            }
            Action::ManualRelay { device, on } => {
                let command = DeviceCommand::SwitchRelay {
                    on,
                    reason: "operator switched the relay".into(),
                    actor: Actor::operator("op"),
                    at: self.now,
                };
                if on {
                    self.manual_on.insert(device.clone(), self.now);
                    let back = self.rng.range(30, 600);
                    self.at(
                        back,
                        Action::ManualRelay {
                            device: device.clone(),
                            on: false,
                        },
                    );
                }
                if self.device(&device, command).is_ok() && !on {
                    self.manual_on.remove(&device);
                }
            }
            Action::ShellyOffline { device, seconds } => {
                if let Some(key) = crate::world::relay_key(&self.devices, &device) {
                    let now = self.now;
                    if let Some(relay) = lock(&self.shelly).relays.get_mut(&key) {
                        relay.offline_until = Some(now + Duration::seconds(seconds));
                        relay.last_fault_at = Some(now + Duration::seconds(seconds));
                    }
                }
            }
            Action::ShellyReboot { device } => {
                if let Some(key) = crate::world::relay_key(&self.devices, &device) {
                    if let Some(relay) = lock(&self.shelly).relays.get_mut(&key) {
                        relay.on = false;
                        relay.auto_off_at = None;
                    }
                }
            }
            Action::RelayBehindBack { device } => {
                if let Some(key) = crate::world::relay_key(&self.devices, &device) {
                    let now = self.now;
                    if let Some(relay) = lock(&self.shelly).relays.get_mut(&key) {
                        relay.on = !relay.on;
                        relay.on_by_command = false;
                        relay.auto_off_at = None;
                        relay.last_fault_at = Some(now);
                    }
                    self.checks.behind_back.insert(device, now);
                }
            }
            Action::TtlockOffline { seconds } => {
                let until = self.now + Duration::seconds(seconds);
                lock(&self.ttlock).offline_until = until;
            }
            Action::LapseAuthorization { pick } => {
                let held: Vec<String> = lock(&self.stripe)
                    .intents
                    .values()
                    .filter(|i| i.status == IntentStatus::RequiresCapture)
                    .map(|i| i.id.clone())
                    .collect();
                if !held.is_empty() {
                    let intent = &held[(pick % held.len() as u64) as usize];
                    lock(&self.stripe).lapse_authorization(intent);
                }
            }
            Action::Dispute { pick } => {
                let paid: Vec<String> = lock(&self.stripe)
                    .intents
                    .values()
                    .filter(|i| i.status == IntentStatus::Succeeded)
                    .map(|i| i.id.clone())
                    .collect();
                if !paid.is_empty() {
                    let intent = &paid[(pick % paid.len() as u64) as usize];
                    lock(&self.stripe).dispute(intent);
                }
            }
            Action::Crash => self.crash("between steps"),
            Action::ClockJump { seconds } => self.now += Duration::seconds(seconds),
        }
    }

    fn intent_of(&self, payment: Uuid) -> Option<String> {
        self.guests
            .iter()
            .find(|g| g.payment_id == payment)
            .map(|g| g.intent.clone())
    }

    fn door_checkout(&mut self, door_uid: &str, double_submit: bool) {
        let (door, _) = self.store.load::<latchkey_aggregates::door::Door>(door_uid);
        let Some(amount) = door
            .price()
            .filter(|_| door.is_accepting_payments())
            .cloned()
        else {
            self.trace.note(
                self.now,
                "checkout refused: the door is not taking payments",
            );
            return;
        };
        let target = PaymentTarget::Door {
            door_uid: door_uid.to_string(),
        };
        self.checkout(target, amount, false, double_submit);
    }

    fn device_checkout(&mut self, device_uid: &str, plan_id: &str, double_submit: bool) {
        let (device, _) = self
            .store
            .load::<latchkey_aggregates::device::Device>(device_uid);
        let Some(plan) = device
            .plan(plan_id)
            .filter(|_| device.is_accepting_sessions())
            .cloned()
        else {
            self.trace.note(
                self.now,
                "checkout refused: no such plan, or the device is in maintenance",
            );
            return;
        };
        let target = PaymentTarget::Device {
            device_uid: device_uid.to_string(),
            plan_id: plan_id.to_string(),
        };
        self.checkout(target, plan.price, true, double_submit);
    }

    /// The mirror of `payments::checkout`: lock the price, create the Checkout Session,
    /// remember its ids; then the guest's fate is drawn.
    fn checkout(
        &mut self,
        target: PaymentTarget,
        amount: latchkey_aggregates::Money,
        manual: bool,
        double_submit: bool,
    ) {
        let payment_id = self.rng.uuid();
        let minutes = match &target {
            PaymentTarget::Door { door_uid } => self
                .store
                .load::<latchkey_aggregates::door::Door>(door_uid)
                .0
                .access_minutes()
                .unwrap_or(60),
            PaymentTarget::Device {
                device_uid,
                plan_id,
            } => self
                .store
                .load::<latchkey_aggregates::device::Device>(device_uid)
                .0
                .plan(plan_id)
                .map_or(5, |plan| plan.minutes),
        };
        let offer = latchkey::payments::checkout::lock_offer(
            &target,
            &amount,
            minutes,
            "simulated".into(),
            None,
        );
        let start = PaymentCommand::StartCheckout {
            payment_id,
            offer: Some(Box::new(offer)),
            target,
            price: amount.clone(),
            guest_email: format!("guest-{}@example.com", self.guests.len()),
            actor: Actor::Guest,
            at: self.now,
        };
        if self.payment(payment_id, start.clone()).is_err() {
            return;
        }
        if double_submit {
            let _ = self.payment(payment_id, start);
        }
        let (session, intent) =
            lock(&self.stripe).create_checkout(payment_id, amount.amount_minor, "eur", manual);
        self.refs.insert(session.clone(), payment_id);
        self.refs.insert(intent.clone(), payment_id);
        let record = PaymentCommand::RecordCheckoutSession {
            checkout_session_id: session,
            payment_intent_id: Some(intent.clone()),
            expires_at: None,
            actor: Actor::Guest,
            at: self.now,
        };
        let _ = self.payment(payment_id, record);
        self.guests.push(Guest {
            payment_id,
            intent,
            device: manual,
        });
        let fate = self.rng.range(0, 99);
        let payment = payment_id;
        match fate {
            0..=69 => {
                let delay = self.rng.range(10, 120);
                self.at(delay, Action::GuestPays { payment });
            }
            70..=79 => {
                let delay = self.rng.range(10, 60);
                self.at(
                    delay,
                    Action::GuestDeclined {
                        payment,
                        retries: true,
                    },
                );
            }
            80..=84 => {
                let delay = self.rng.range(10, 60);
                self.at(
                    delay,
                    Action::GuestDeclined {
                        payment,
                        retries: false,
                    },
                );
            }
            _ => self.at(1800, Action::CheckoutExpires { payment }),
        }
    }

    /// Stripe delivering one event: it may be lost on the way (Stripe retries), stored
    /// and answered, stored with the answer lost (Stripe retries), or sent twice.
    fn deliver(&mut self, event_id: String, attempt: u32) {
        let roll = self.rng.range(0, 99);
        if roll < 8 {
            let retry = [60, 300, 1800, 3600][(attempt as usize).min(3)];
            self.at(
                retry,
                Action::Deliver {
                    event_id,
                    attempt: attempt + 1,
                },
            );
            return;
        }
        self.endpoint(&event_id);
        if roll < 14 {
            let retry = [60, 300, 1800, 3600][(attempt as usize).min(3)];
            self.at(
                retry,
                Action::Deliver {
                    event_id,
                    attempt: attempt + 1,
                },
            );
        } else if roll < 18 {
            let again = self.rng.range(0, 5);
            self.at(
                again,
                Action::Deliver {
                    event_id,
                    attempt: attempt + 1,
                },
            );
        }
    }

    /// Schedules the delivery of every event Stripe created since the last look.
    pub fn schedule_new_deliveries(&mut self) {
        let fresh: Vec<String> = std::mem::take(&mut lock(&self.stripe).fresh);
        for event_id in fresh {
            let delay = match self.rng.range(0, 99) {
                0..=69 => self.rng.range(0, 3),
                70..=89 => self.rng.range(3, 60),
                _ => self.rng.range(60, 1200),
            };
            self.at(
                delay,
                Action::Deliver {
                    event_id,
                    attempt: 0,
                },
            );
        }
    }

    /// `POST /api/payments/{id}/refund`: an operator refunds part or all; a request that
    /// failed at Stripe for a retryable reason is sent again with the same key.
    fn operator_refund(
        &mut self,
        pick: u64,
        partial: bool,
        retry: Option<(Uuid, Uuid, Option<latchkey_aggregates::Money>)>,
    ) {
        let (payment_id, request_id, amount) = match retry {
            Some(retry) => retry,
            None => {
                let refundable: Vec<Uuid> = self
                    .store
                    .payments
                    .iter()
                    .filter(|(_, s)| {
                        matches!(
                            s.state.status(),
                            PaymentStatus::Succeeded | PaymentStatus::PartiallyRefunded
                        )
                    })
                    .map(|(_, s)| s.state.payment_id().unwrap_or_default())
                    .collect();
                if refundable.is_empty() {
                    return;
                }
                let payment_id = refundable[(pick % refundable.len() as u64) as usize];
                let (payment, _) = self
                    .store
                    .load::<latchkey_aggregates::payment::Payment>(&payment_id.to_string());
                let left = payment.refundable().map_or(0, |m| m.amount_minor);
                let amount = (partial && left > 1).then(|| price(self.rng.range(1, left - 1)));
                (payment_id, self.rng.uuid(), amount)
            }
        };
        let command = PaymentCommand::RequestRefund {
            refund_request_id: request_id,
            amount: amount.clone(),
            reason: "operator refund".into(),
            actor: Actor::operator("op"),
            at: self.now,
        };
        match self.payment(payment_id, command) {
            Err(Refusal::User(message))
                if message.contains("simulated: Stripe") && self.rng.chance(80) =>
            {
                let later = self.rng.range(20, 300);
                self.at(
                    later,
                    Action::OperatorRefund {
                        pick,
                        partial,
                        retry: Some((payment_id, request_id, amount)),
                    },
                );
            }
            Err(Refusal::Crashed) => {
                let later = self.rng.range(20, 300);
                self.at(
                    later,
                    Action::OperatorRefund {
                        pick,
                        partial,
                        retry: Some((payment_id, request_id, amount)),
                    },
                );
            }
            _ => {}
        }
    }

    fn operator_force_end(&mut self, pick: u64) {
        let live: Vec<String> = self
            .store
            .sessions
            .iter()
            .filter(|(_, s)| s.state.state().is_some_and(|state| !state.is_ended()))
            .map(|(id, _)| id.clone())
            .collect();
        if live.is_empty() {
            return;
        }
        let id = live[(pick % live.len() as u64) as usize].clone();
        let command = SessionCommand::ForceEndSession {
            reason: "operator".into(),
            actor: Actor::operator("op"),
            at: self.now,
        };
        let _ = self.session(&id, command);
    }
}
