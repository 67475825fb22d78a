//! A generated history through the real command buses and the domain's fake services:
//! doors, devices, payments with successes, duplicates, failures, expiries, cancellations,
//! refunds (partial, full, out of order, before the success, requested by an operator),
//! disputes, access codes, and device sessions with activations, relay failures, queues,
//! completions and force-ends. Deterministic for a given seed.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use latchkey::cqrs::{CommandBus, CommandMetadata};
use latchkey::store::repository::AppendSignal;
use latchkey::store::Database;
use latchkey_aggregates::device::services::testing::FakeRelayGateway as DeviceRelay;
use latchkey_aggregates::device::{Device, DeviceCommand, DeviceServices, DeviceStatus, UsagePlan};
use latchkey_aggregates::door::services::testing::FakeLockGateway;
use latchkey_aggregates::door::services::LockError;
use latchkey_aggregates::door::{Door, DoorCommand, DoorServices, DoorStatus};
use latchkey_aggregates::payment::services::testing::FakePaymentGateway;
use latchkey_aggregates::payment::{
    Payment, PaymentCommand, PaymentServices, PaymentTarget, StripeEventRef,
};
use latchkey_aggregates::session::services::testing::FakeRelayGateway;
use latchkey_aggregates::session::services::{RelayError, RelayTarget};
use latchkey_aggregates::session::{DeviceSession, SessionCommand, SessionServices, SessionTerms};
use latchkey_aggregates::{Actor, Currency, Money};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

pub struct Buses {
    pub payments: CommandBus<Payment>,
    pub doors: CommandBus<Door>,
    pub devices: CommandBus<Device>,
    pub sessions: CommandBus<DeviceSession>,
    pub locks: Arc<FakeLockGateway>,
    pub relay: Arc<FakeRelayGateway>,
}

impl Buses {
    pub fn new(database: &Database, appended: &AppendSignal) -> Self {
        let locks = Arc::new(FakeLockGateway::new());
        let relay = Arc::new(FakeRelayGateway::new());
        let device_relay = Arc::new(DeviceRelay::new());
        Buses {
            payments: CommandBus::new(
                database.clone(),
                appended.clone(),
                PaymentServices::new(Arc::new(FakePaymentGateway::new())),
            ),
            doors: CommandBus::new(
                database.clone(),
                appended.clone(),
                DoorServices::new(locks.clone()),
            ),
            devices: CommandBus::new(
                database.clone(),
                appended.clone(),
                DeviceServices::new(device_relay),
            ),
            sessions: CommandBus::new(
                database.clone(),
                appended.clone(),
                SessionServices::new(relay.clone()),
            ),
            locks,
            relay,
        }
    }
}

pub fn money(amount_minor: i64, currency: &str) -> Money {
    Money::new(amount_minor, Currency::parse(currency).unwrap())
}

fn meta(actor: &Actor) -> CommandMetadata {
    CommandMetadata::new(actor.to_string(), "test")
}

pub async fn pay(bus: &CommandBus<Payment>, id: Uuid, command: PaymentCommand) {
    let actor = actor_of_payment(&command);
    bus.execute(&id.to_string(), command.clone(), meta(&actor))
        .await
        .unwrap_or_else(|error| panic!("payment {id}: {command:?} failed: {error}"));
}

fn actor_of_payment(command: &PaymentCommand) -> Actor {
    match command {
        PaymentCommand::StartCheckout { actor, .. }
        | PaymentCommand::RecordCheckoutSession { actor, .. }
        | PaymentCommand::RecordAuthorization { actor, .. }
        | PaymentCommand::RecordFailure { actor, .. }
        | PaymentCommand::ConfirmPayment { actor, .. }
        | PaymentCommand::RecordRefund { actor, .. }
        | PaymentCommand::RecordRefundUpdate { actor, .. }
        | PaymentCommand::RecordRefundSubmission { actor, .. }
        | PaymentCommand::RecordCancellation { actor, .. }
        | PaymentCommand::RecordCheckoutExpired { actor, .. }
        | PaymentCommand::RecordDispute { actor, .. }
        | PaymentCommand::RecordDisputeUpdate { actor, .. }
        | PaymentCommand::GrantAccess { actor, .. }
        | PaymentCommand::CapturePayment { actor, .. }
        | PaymentCommand::CancelAuthorization { actor, .. }
        | PaymentCommand::RecordCaptureSubmission { actor, .. }
        | PaymentCommand::RecordCancellationSubmission { actor, .. }
        | PaymentCommand::RequestRefund { actor, .. } => actor.clone(),
    }
}

pub struct DoorSpec {
    pub uid: &'static str,
    pub location: &'static str,
    pub time_zone: &'static str,
    pub price: i64,
    pub currency: &'static str,
}

pub struct DeviceSpec {
    pub uid: &'static str,
    pub location: &'static str,
    pub time_zone: &'static str,
    pub plans: &'static [(&'static str, u32, i64, &'static str)],
}

pub const DOORS: &[DoorSpec] = &[
    DoorSpec {
        uid: "1001",
        location: "Paris Marais",
        time_zone: "Europe/Paris",
        price: 500,
        currency: "eur",
    },
    DoorSpec {
        uid: "1002",
        location: "Brooklyn",
        time_zone: "America/New_York",
        price: 700,
        currency: "usd",
    },
    DoorSpec {
        uid: "1003",
        location: "Mumbai",
        time_zone: "Asia/Kolkata",
        price: 30_000,
        currency: "inr",
    },
];

pub const DEVICES: &[DeviceSpec] = &[
    DeviceSpec {
        uid: "washer-1",
        location: "London Laundry",
        time_zone: "Europe/London",
        plans: &[("p30", 30, 300, "gbp"), ("p60", 60, 500, "gbp")],
    },
    DeviceSpec {
        uid: "sauna-1",
        location: "Paris Marais",
        time_zone: "Europe/Paris",
        plans: &[("p15", 15, 800, "eur")],
    },
];

/// Drives the buses with a seeded random mix of everything the domain can record.
pub struct History {
    pub buses: Buses,
    /// Prepended to every door and device uid, so several histories can be generated
    /// side by side without sharing an aggregate.
    prefix: String,
    rng: StdRng,
    pub clock: DateTime<Utc>,
    counter: u64,
}

impl History {
    pub fn new(database: &Database, appended: &AppendSignal, seed: u64, prefix: &str) -> Self {
        History {
            buses: Buses::new(database, appended),
            prefix: prefix.to_owned(),
            rng: StdRng::seed_from_u64(seed),
            clock: Utc.with_ymd_and_hms(2026, 10, 20, 6, 0, 0).unwrap(),
            counter: 0,
        }
    }

    fn next_id(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    fn stripe_event(&mut self, at: DateTime<Utc>) -> StripeEventRef {
        let n = self.next_id();
        StripeEventRef {
            id: format!("evt_{n}"),
            created: at,
        }
    }

    pub fn uid(&self, uid: &str) -> String {
        format!("{}{uid}", self.prefix)
    }

    fn operator() -> Actor {
        Actor::operator("token:ops")
    }

    pub async fn register_catalogue(&mut self) {
        let at = self.clock;
        for (index, door) in DOORS.iter().enumerate() {
            let command = DoorCommand::RegisterDoor {
                door_uid: self.uid(door.uid),
                lock_id: 1000 + index as i64,
                name: format!("Door {}", door.uid),
                location: door.location.to_owned(),
                time_zone: door.time_zone.to_owned(),
                price: money(door.price, door.currency),
                access_minutes: 120,
                actor: Self::operator(),
                at,
            };
            self.door(door.uid, command).await;
        }
        for device in DEVICES {
            let command = DeviceCommand::RegisterDevice {
                device_uid: self.uid(device.uid),
                name: format!("Device {}", device.uid),
                location: device.location.to_owned(),
                time_zone: device.time_zone.to_owned(),
                shelly_device_id: format!("shelly-{}", device.uid),
                shelly_channel: 0,
                plans: plans(device),
                actor: Self::operator(),
                at,
            };
            self.device(device.uid, command).await;
        }
    }

    pub async fn door(&self, uid: &str, command: DoorCommand) {
        let uid = self.uid(uid);
        self.buses
            .doors
            .execute(&uid, command.clone(), meta(&Self::operator()))
            .await
            .unwrap_or_else(|error| panic!("door {uid}: {command:?} failed: {error}"));
    }

    pub async fn device(&self, uid: &str, command: DeviceCommand) {
        let uid = self.uid(uid);
        self.buses
            .devices
            .execute(&uid, command.clone(), meta(&Actor::System))
            .await
            .unwrap_or_else(|error| panic!("device {uid}: {command:?} failed: {error}"));
    }

    async fn session(&self, id: Uuid, command: SessionCommand) {
        self.buses
            .sessions
            .execute(&id.to_string(), command.clone(), meta(&Actor::System))
            .await
            .unwrap_or_else(|error| panic!("session {id}: {command:?} failed: {error}"));
    }

    /// Generates `payments` payments and everything that follows them (codes, sessions,
    /// refunds, catalogue changes now and then), then expires the access codes.
    pub async fn generate(&mut self, payments: usize) {
        for index in 0..payments {
            self.clock += Duration::minutes(self.rng.gen_range(17..97));
            if self.rng.gen_bool(0.55) {
                let door = &DOORS[self.rng.gen_range(0..DOORS.len())];
                self.door_payment(door).await;
            } else {
                let device = &DEVICES[self.rng.gen_range(0..DEVICES.len())];
                let queued = self.rng.gen_bool(0.12);
                self.device_payments(device, queued).await;
            }
            if index % 97 == 50 {
                self.catalogue_changes(index).await;
            }
        }
        let at = self.clock + Duration::days(3);
        for door in DOORS {
            let command = DoorCommand::ExpireAccessCodes {
                actor: Actor::System,
                at,
            };
            self.door(door.uid, command).await;
        }
    }

    /// Maintenance, price, details, plans and relay changes, now and then.
    async fn catalogue_changes(&mut self, index: usize) {
        let at = self.clock;
        let door = &DOORS[index % DOORS.len()];
        for status in [DoorStatus::Maintenance, DoorStatus::Active] {
            let command = DoorCommand::SetDoorStatus {
                status,
                reason: "battery".into(),
                actor: Self::operator(),
                at,
            };
            self.door(door.uid, command).await;
        }
        let command = DoorCommand::RecordPassageMode {
            enabled: index % 2 == 0,
            actor: Actor::System,
            at,
        };
        self.door(door.uid, command).await;
        let command = DoorCommand::UpdateDoor {
            name: Some(format!("Door {} ({index})", door.uid)),
            location: Some(format!("{} {}", door.location, index % 3)),
            time_zone: None,
            price: Some(money(door.price + index as i64, door.currency)),
            access_minutes: Some(60 + index as u32 % 60),
            actor: Self::operator(),
            at,
        };
        self.door(door.uid, command).await;
        let device = &DEVICES[index % DEVICES.len()];
        for status in [DeviceStatus::Maintenance, DeviceStatus::Active] {
            let command = DeviceCommand::SetDeviceStatus {
                status,
                reason: "cleaning".into(),
                actor: Self::operator(),
                at,
            };
            self.device(device.uid, command).await;
        }
        let (actor, on) = if index % 2 == 0 {
            (Actor::System, false)
        } else {
            (Self::operator(), true)
        };
        let command = DeviceCommand::SwitchRelay {
            on,
            reason: "sweep".into(),
            actor,
            at,
        };
        self.device(device.uid, command).await;
        let command = DeviceCommand::UpdateDevice {
            name: None,
            location: Some(format!("{} {}", device.location, index % 3)),
            time_zone: None,
            shelly_device_id: None,
            shelly_channel: None,
            actor: Self::operator(),
            at,
        };
        self.device(device.uid, command).await;
        let command = DeviceCommand::ChangePlans {
            plans: plans(device),
            actor: Self::operator(),
            at,
        };
        self.device(device.uid, command).await;
    }

    /// Starts a checkout and records its Checkout Session; returns the payment id.
    async fn start(&mut self, target: PaymentTarget, price: Money) -> (Uuid, u64) {
        let n = self.next_id();
        let id = Uuid::from_u128(self.rng.gen());
        let at = self.clock;
        let email = format!("guest{}@example.com", n % 40);
        let bus = &self.buses.payments;
        let start = PaymentCommand::StartCheckout {
            payment_id: id,
            target,
            price,
            guest_email: email,
            actor: Actor::Guest,
            at,
            offer: None,
        };
        pay(bus, id, start).await;
        let session = PaymentCommand::RecordCheckoutSession {
            checkout_session_id: format!("cs_{n}"),
            payment_intent_id: Some(format!("pi_{n}")),
            expires_at: Some(at + Duration::minutes(30)),
            actor: Actor::System,
            at: at + Duration::seconds(1),
        };
        pay(bus, id, session).await;
        (id, n)
    }

    async fn confirm(&mut self, id: Uuid, n: u64, amount: Money, at: DateTime<Utc>) {
        let stripe_event = self.stripe_event(at);
        let command = PaymentCommand::ConfirmPayment {
            payment_intent_id: format!("pi_{n}"),
            charge_id: Some(format!("ch_{n}")),
            amount_received: amount,
            stripe_event,
            actor: Actor::Stripe,
            at,
        };
        pay(&self.buses.payments, id, command).await;
    }

    async fn refund_report(&mut self, id: Uuid, n: u64, total: Money, at: DateTime<Utc>) {
        let stripe_event = self.stripe_event(at);
        let command = PaymentCommand::RecordRefund {
            payment_intent_id: Some(format!("pi_{n}")),
            charge_id: format!("ch_{n}"),
            amount_refunded: total,
            refund_request_id: None,
            stripe_event,
            actor: Actor::Stripe,
            at,
        };
        pay(&self.buses.payments, id, command).await;
    }

    async fn door_payment(&mut self, door: &DoorSpec) {
        let price = money(door.price, door.currency);
        let target = PaymentTarget::Door {
            door_uid: self.uid(door.uid),
        };
        let (id, n) = self.start(target, price.clone()).await;
        let at = self.clock + Duration::minutes(2);
        let roll = self.rng.gen_range(0..100);
        match roll {
            0..=11 => {
                let stripe_event = self.stripe_event(at);
                let command = PaymentCommand::RecordFailure {
                    payment_intent_id: format!("pi_{n}"),
                    reason: "card_declined: insufficient funds".into(),
                    stripe_event,
                    actor: Actor::Stripe,
                    at,
                };
                pay(&self.buses.payments, id, command).await;
                if self.rng.gen_bool(0.5) {
                    self.door_paid(door, id, n, price, at + Duration::minutes(1))
                        .await;
                }
            }
            12..=23 => {
                let stripe_event = self.stripe_event(at + Duration::minutes(30));
                let command = PaymentCommand::RecordCheckoutExpired {
                    checkout_session_id: format!("cs_{n}"),
                    stripe_event,
                    actor: Actor::Stripe,
                    at: at + Duration::minutes(30),
                };
                pay(&self.buses.payments, id, command).await;
            }
            24..=29 => {}
            30..=37 => {
                // The refund's webhook overtakes the success's.
                self.refund_report(id, n, price.with_amount(price.amount_minor / 2), at)
                    .await;
                self.door_paid(door, id, n, price, at).await;
            }
            _ => self.door_paid(door, id, n, price, at).await,
        }
    }

    /// Confirms, maybe twice, issues the code, and maybe refunds.
    async fn door_paid(
        &mut self,
        door: &DoorSpec,
        id: Uuid,
        n: u64,
        price: Money,
        at: DateTime<Utc>,
    ) {
        self.confirm(id, n, price.clone(), at).await;
        if self.rng.gen_bool(0.15) {
            self.confirm(id, n, price.clone(), at + Duration::minutes(5))
                .await;
        }
        if self.rng.gen_bool(0.1) {
            self.buses
                .locks
                .queue_issue(Err(LockError::retryable("gateway offline")));
            let command = DoorCommand::IssueAccessCode {
                payment_id: id,
                actor: Actor::System,
                at,
                locked_minutes: None,
            };
            self.door(door.uid, command).await;
        }
        let command = DoorCommand::IssueAccessCode {
            payment_id: id,
            actor: Actor::System,
            at: at + Duration::seconds(10),
            locked_minutes: None,
        };
        self.door(door.uid, command).await;
        if self.rng.gen_bool(0.3) {
            self.refunds(id, n, &price, at).await;
            let command = DoorCommand::RevokeAccessCode {
                payment_id: id,
                reason: "refunded".into(),
                actor: Actor::System,
                at: at + Duration::days(2),
            };
            self.door(door.uid, command).await;
        } else if self.rng.gen_bool(0.05) {
            let stripe_event = self.stripe_event(at + Duration::days(5));
            let command = PaymentCommand::RecordDispute {
                dispute_id: format!("dp_{n}"),
                amount: price.clone(),
                reason: "fraudulent".into(),
                stripe_event,
                actor: Actor::Stripe,
                at: at + Duration::days(5),
            };
            pay(&self.buses.payments, id, command).await;
        }
    }

    /// Partial then full refunds (reported in or out of order), or an operator's refund.
    async fn refunds(&mut self, id: Uuid, n: u64, price: &Money, at: DateTime<Utc>) {
        let partial = price.with_amount(price.amount_minor / 4);
        let day1 = at + Duration::hours(self.rng.gen_range(1..40));
        let day2 = day1 + Duration::hours(self.rng.gen_range(1..40));
        match self.rng.gen_range(0..4) {
            0 => {
                self.refund_report(id, n, partial, day1).await;
                self.refund_report(id, n, price.clone(), day2).await;
            }
            1 => {
                // Out of order: the newer, larger total first; the older one is ignored.
                self.refund_report(id, n, price.clone(), day2).await;
                self.refund_report(id, n, partial, day1).await;
            }
            2 => self.refund_report(id, n, partial, day1).await,
            _ => {
                let command = PaymentCommand::RequestRefund {
                    refund_request_id: Uuid::from_u128(self.rng.gen()),
                    amount: None,
                    reason: "guest complaint".into(),
                    actor: Self::operator(),
                    at: day1,
                };
                pay(&self.buses.payments, id, command).await;
                self.refund_report(id, n, price.clone(), day2).await;
            }
        }
    }

    /// One device payment, or two back to back when `queued` (the second waits for the
    /// first to release the device, which promotes it).
    async fn device_payments(&mut self, device: &DeviceSpec, queued: bool) {
        let Some(first) = self.device_checkout(device, true).await else {
            return;
        };
        let second = if queued {
            self.device_checkout(device, false).await
        } else {
            None
        };
        self.run_session(device, &first, false).await;
        if let Some(second) = second {
            self.run_session(device, &second, true).await;
        }
    }

    /// Checkout and authorization; reserves the device and opens or queues the session.
    /// `None` when the payment did not get as far as an authorization.
    async fn device_checkout(
        &mut self,
        device: &DeviceSpec,
        device_is_free: bool,
    ) -> Option<DevicePurchase> {
        let plan = device.plans[self.rng.gen_range(0..device.plans.len())];
        let price = money(plan.2, plan.3);
        let target = PaymentTarget::Device {
            device_uid: self.uid(device.uid),
            plan_id: plan.0.to_owned(),
        };
        let (payment_id, n) = self.start(target, price.clone()).await;
        let at = self.clock + Duration::minutes(1);
        if self.rng.gen_bool(0.1) {
            let stripe_event = self.stripe_event(at + Duration::minutes(30));
            let command = PaymentCommand::RecordCheckoutExpired {
                checkout_session_id: format!("cs_{n}"),
                stripe_event,
                actor: Actor::Stripe,
                at: at + Duration::minutes(30),
            };
            pay(&self.buses.payments, payment_id, command).await;
            return None;
        }
        let stripe_event = self.stripe_event(at);
        let command = PaymentCommand::RecordAuthorization {
            payment_intent_id: format!("pi_{n}"),
            amount_capturable: price.clone(),
            stripe_event,
            actor: Actor::Stripe,
            at,
        };
        pay(&self.buses.payments, payment_id, command).await;
        let session_id = Uuid::from_u128(self.rng.gen());
        let command = DeviceCommand::ReserveDevice {
            session_id,
            payment_id,
            actor: Actor::System,
            at,
        };
        self.device(device.uid, command).await;
        let terms = SessionTerms {
            session_id,
            payment_id,
            device_uid: self.uid(device.uid),
            relay: RelayTarget {
                shelly_device_id: format!("shelly-{}", device.uid),
                channel: 0,
            },
            plan_id: plan.0.to_owned(),
            plan_minutes: plan.1,
            grace_seconds: 120,
        };
        let command = if device_is_free {
            SessionCommand::OpenSession {
                terms: terms.clone(),
                actor: Actor::System,
                at,
            }
        } else {
            SessionCommand::QueueSession {
                terms: terms.clone(),
                actor: Actor::System,
                at,
            }
        };
        self.session(session_id, command).await;
        Some(DevicePurchase {
            payment_id,
            n,
            price,
            terms,
            created_at: at,
        })
    }

    async fn run_session(
        &mut self,
        device: &DeviceSpec,
        purchase: &DevicePurchase,
        promoted: bool,
    ) {
        let session_id = purchase.terms.session_id;
        let at = self.clock.max(purchase.created_at) + Duration::seconds(5);
        if promoted {
            let command = SessionCommand::OpenQueuedSession {
                actor: Actor::System,
                at,
            };
            self.session(session_id, command).await;
        }
        let payments = &self.buses.payments;
        let roll = self.rng.gen_range(0..100);
        if roll < 6 {
            // The relay refuses for good: the session fails and the hold is released.
            self.buses
                .relay
                .queue_switch(Err(RelayError::permanent("device unknown to Shelly")));
            self.session(
                session_id,
                SessionCommand::SwitchRelayOn {
                    actor: Actor::System,
                    at,
                },
            )
            .await;
            let command = PaymentCommand::CancelAuthorization {
                reason: "the device never started".into(),
                actor: Actor::System,
                at,
            };
            pay(payments, purchase.payment_id, command).await;
            let stripe_event = self.stripe_event(at + Duration::seconds(30));
            let command = PaymentCommand::RecordCancellation {
                payment_intent_id: format!("pi_{}", purchase.n),
                cancellation_reason: Some("requested_by_customer".into()),
                stripe_event,
                actor: Actor::Stripe,
                at: at + Duration::seconds(30),
            };
            pay(&self.buses.payments, purchase.payment_id, command).await;
            self.release(device, session_id, at + Duration::minutes(1))
                .await;
            return;
        }
        if roll < 16 {
            self.buses
                .relay
                .queue_switch(Err(RelayError::retryable("Shelly cloud timeout")));
            self.session(
                session_id,
                SessionCommand::SwitchRelayOn {
                    actor: Actor::System,
                    at,
                },
            )
            .await;
        }
        let on_at = at + Duration::seconds(20);
        self.session(
            session_id,
            SessionCommand::SwitchRelayOn {
                actor: Actor::System,
                at: on_at,
            },
        )
        .await;
        let command = PaymentCommand::CapturePayment {
            amount_to_capture: None,
            actor: Actor::System,
            at: on_at,
        };
        pay(&self.buses.payments, purchase.payment_id, command).await;
        self.confirm(
            purchase.payment_id,
            purchase.n,
            purchase.price.clone(),
            on_at + Duration::seconds(3),
        )
        .await;
        let ends_at = on_at + Duration::minutes(i64::from(purchase.terms.plan_minutes));
        if self.rng.gen_bool(0.2) {
            let command = SessionCommand::ForceEndSession {
                reason: "guest asked to stop".into(),
                actor: Self::operator(),
                at: on_at + Duration::minutes(5),
            };
            self.session(session_id, command).await;
            if self.rng.gen_bool(0.5) {
                let price = purchase.price.clone();
                self.refunds(purchase.payment_id, purchase.n, &price, on_at)
                    .await;
            }
        } else {
            if self.rng.gen_bool(0.1) {
                self.buses
                    .relay
                    .queue_switch(Err(RelayError::retryable("Shelly cloud timeout")));
                self.session(
                    session_id,
                    SessionCommand::FinishSession {
                        actor: Actor::System,
                        at: ends_at,
                    },
                )
                .await;
            }
            self.session(
                session_id,
                SessionCommand::FinishSession {
                    actor: Actor::System,
                    at: ends_at + Duration::seconds(30),
                },
            )
            .await;
        }
        self.release(device, session_id, ends_at + Duration::minutes(1))
            .await;
        self.clock = self.clock.max(ends_at + Duration::minutes(2));
    }

    /// Releases the device; a queued session promoted by it opens.
    async fn release(&mut self, device: &DeviceSpec, session_id: Uuid, at: DateTime<Utc>) {
        let command = DeviceCommand::ReleaseDevice {
            session_id,
            actor: Actor::System,
            at,
        };
        self.device(device.uid, command).await;
    }
}

pub struct DevicePurchase {
    pub payment_id: Uuid,
    pub n: u64,
    pub price: Money,
    pub terms: SessionTerms,
    pub created_at: DateTime<Utc>,
}

fn plans(device: &DeviceSpec) -> Vec<UsagePlan> {
    device
        .plans
        .iter()
        .map(|(plan_id, minutes, price, currency)| UsagePlan {
            plan_id: (*plan_id).to_owned(),
            name: format!("{minutes} minutes"),
            minutes: *minutes,
            price: money(*price, currency),
        })
        .collect()
}
