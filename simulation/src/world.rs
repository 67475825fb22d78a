//! The simulated world: the store, the outside models, the system's loops, and one seeded
//! scheduler that decides what happens next.
//!
//! Each step the scheduler lists what could run now — a timed action (a guest, an
//! operator, a fault, a webhook delivery), the inbox, each workflow, the scheduled jobs,
//! the reconciler — and picks one with the seed's generator. Nothing runs concurrently, so
//! the interleavings are exactly the ones the seed chose; races that happen *inside* one
//! command (a webhook landing while our own Stripe call is in flight) are modelled by the
//! port, which hands its racing events to [`World::execute`] to deliver before the command
//! commits — the commit then conflicts and re-runs, as cqrs-es does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use latchkey::stripe_events::{translate, PaymentReference, Translation};
use latchkey_aggregates::device::{Device, DeviceCommand, DeviceServices, UsagePlan};
use latchkey_aggregates::door::{Door, DoorCommand, DoorServices};
use latchkey_aggregates::payment::{
    Payment, PaymentCommand, PaymentError, PaymentServices, PaymentTarget,
};
use latchkey_aggregates::session::{DeviceSession, SessionCommand, SessionServices};
use latchkey_aggregates::{Actor, Currency, Money};
use serde_json::Value;
use uuid::Uuid;

use crate::outside::{lock, Lock, Relay, ShellyModel, ShellyPort, TtlockModel, TtlockPort};
use crate::rng::Rng;
use crate::store::{Entry, Store, Streams};
use crate::stripe::{StripeModel, StripePort};
use crate::trace::Trace;

/// A command that did not commit.
#[derive(Clone, Debug)]
pub enum Refusal {
    /// The aggregate refused (cqrs-es `UserError`), with its message.
    User(String),
    /// Optimistic-concurrency conflicts on every attempt.
    Conflict,
    /// The process crashed after the command's calls out and before its append.
    Crashed,
}

/// What the timed queue holds.
#[derive(Clone, Debug)]
pub enum Action {
    DoorCheckout {
        door: String,
        double_submit: bool,
    },
    DeviceCheckout {
        device: String,
        plan: String,
        double_submit: bool,
    },
    GuestPays {
        payment: Uuid,
    },
    GuestDeclined {
        payment: Uuid,
        retries: bool,
    },
    CheckoutExpires {
        payment: Uuid,
    },
    Deliver {
        event_id: String,
        attempt: u32,
    },
    OperatorRefund {
        pick: u64,
        partial: bool,
        retry: Option<(Uuid, Uuid, Option<Money>)>,
    },
    OperatorForceEnd {
        pick: u64,
    },
    DoorMaintenance {
        door: String,
        on: bool,
    },
    DeviceMaintenance {
        device: String,
        on: bool,
    },
    RemovePlan {
        device: String,
        plan: String,
    },
    RestorePlans {
        device: String,
    },
    DoorPrice {
        door: String,
        price: i64,
    },
    ManualRelay {
        device: String,
        on: bool,
    },
    ShellyOffline {
        device: String,
        seconds: i64,
    },
    ShellyReboot {
        device: String,
    },
    RelayBehindBack {
        device: String,
    },
    TtlockOffline {
        seconds: i64,
    },
    LapseAuthorization {
        pick: u64,
    },
    Dispute {
        pick: u64,
    },
    Crash,
    ClockJump {
        seconds: i64,
    },
}

/// The webhook inbox row (the mirror of `store::inbox`).
#[derive(Clone, Debug)]
pub struct InboxRow {
    pub status: InboxStatus,
    pub attempts: u32,
    pub due: DateTime<Utc>,
    pub last_error: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InboxStatus {
    Received,
    Processed,
    Ignored,
    Failed,
}

/// A journal subscriber's durable checkpoint and its retry state.
#[derive(Clone, Debug, Default)]
pub struct Checkpoint {
    pub position: usize,
    pub failures: u32,
    pub not_before: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

#[derive(Clone, Debug)]
pub enum Job {
    Issue {
        door: String,
        payment: Uuid,
    },
    Revoke {
        door: String,
        payment: Uuid,
        reason: String,
    },
    Expire {
        door: String,
    },
    /// The mirror of the stray-passcode job (`Job::RemoveStrayPasscodes`).
    RemoveStray {
        door: String,
        payment: Uuid,
    },
    SubmitRefund {
        payment: Uuid,
        request: Uuid,
    },
    /// The mirror of the capture job (`workflows::captures::submit_capture`).
    Capture {
        payment: Uuid,
    },
    /// The mirror of the release job (`workflows::captures::submit_cancellation`).
    CancelAuthorization {
        payment: Uuid,
    },
    /// The mirror of the access deadline job (`workflows::door_access::compensate`).
    AccessDeadline {
        door: String,
        payment: Uuid,
        paid_at: DateTime<Utc>,
    },
}

#[derive(Clone, Debug, Default)]
pub struct ReconcilerState {
    pub just_started: bool,
    pub retry: BTreeMap<String, (u32, DateTime<Utc>)>,
    pub next_pass: Option<DateTime<Utc>>,
    pub seen_position: usize,
    pub last_sweep: Option<DateTime<Utc>>,
}

/// What the guest started, for the operators' and faults' picks and the final checks.
#[derive(Clone, Debug)]
pub struct Guest {
    pub payment_id: Uuid,
    pub intent: String,
    pub device: bool,
}

/// Grace period of a device session, as the application's default.
pub const GRACE_SECONDS: u32 = 120;
/// The reconciler's longest sleep and its sweep interval (the application's defaults).
pub const RECONCILER_INTERVAL_SECONDS: i64 = 5;
pub const SWEEP_INTERVAL_SECONDS: i64 = 300;
/// Workflow retry pacing (`WorkflowOptions` defaults).
pub const WORKFLOW_RETRY_BASE_SECONDS: i64 = 5;
pub const WORKFLOW_RETRY_MAX_SECONDS: i64 = 600;
/// `LATCHKEY_ACCESS_DEADLINE_MINUTES`' default: a paid door guest without a code is
/// refunded this long after paying.
pub const ACCESS_DEADLINE_SECONDS: i64 = 15 * 60;
/// A subscriber failing this many times in a row on one event has stalled.
pub const STALL_FAILURES: u32 = 12;

pub struct World {
    pub now: DateTime<Utc>,
    pub start: DateTime<Utc>,
    pub rng: Rng,
    pub store: Store,
    pub stripe: Arc<Mutex<StripeModel>>,
    pub ttlock: Arc<Mutex<TtlockModel>>,
    pub shelly: Arc<Mutex<ShellyModel>>,
    payment_services: PaymentServices,
    door_services: DoorServices,
    device_services: DeviceServices,
    session_services: SessionServices,
    pub queue: BTreeMap<(DateTime<Utc>, u64), Action>,
    queue_seq: u64,
    pub inbox: BTreeMap<String, InboxRow>,
    pub refs: BTreeMap<String, Uuid>,
    /// Deliveries our endpoint answered 2xx (Stripe never sends them again).
    pub acked: BTreeSet<String>,
    pub device_workflow: Checkpoint,
    pub door_workflow: Checkpoint,
    pub jobs: BTreeMap<String, (DateTime<Utc>, u32, Job)>,
    pub reconciler: ReconcilerState,
    pub guests: Vec<Guest>,
    pub devices: Vec<(String, String, Vec<UsagePlan>)>,
    pub doors: Vec<(String, i64)>,
    pub manual_on: BTreeMap<String, DateTime<Utc>>,
    pub crash_percent_per_mille: u32,
    pub checks: crate::invariants::Tracking,
    pub violations: Vec<String>,
    pub trace: Trace,
}

pub fn epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 8, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn eur(amount: i64) -> Money {
    Money::new(
        amount,
        Currency::parse("eur").unwrap_or_else(|_| unreachable!()),
    )
}

impl World {
    pub fn new(seed: u64, trace: Trace) -> World {
        let mut rng = Rng::new(seed);
        let stripe_faults = crate::scenario::stripe_faults(&mut rng);
        let lock_faults = crate::scenario::device_faults(&mut rng);
        let relay_faults = crate::scenario::device_faults(&mut rng);
        let crash_percent_per_mille = if rng.chance(40) {
            rng.range(1, 15) as u32
        } else {
            0
        };
        let stripe = Arc::new(Mutex::new(StripeModel::new(rng.fork(1), stripe_faults)));
        let ttlock = Arc::new(Mutex::new(TtlockModel::new(rng.fork(2), lock_faults)));
        let shelly = Arc::new(Mutex::new(ShellyModel::new(rng.fork(3), relay_faults)));
        let relays = Arc::new(ShellyPort(shelly.clone()));
        World {
            now: epoch(),
            start: epoch(),
            rng,
            store: Store::default(),
            payment_services: PaymentServices::new(Arc::new(StripePort(stripe.clone()))),
            door_services: DoorServices::new(Arc::new(TtlockPort(ttlock.clone()))),
            device_services: DeviceServices::new(relays.clone()),
            session_services: SessionServices::new(relays),
            stripe,
            ttlock,
            shelly,
            queue: BTreeMap::new(),
            queue_seq: 0,
            inbox: BTreeMap::new(),
            refs: BTreeMap::new(),
            acked: BTreeSet::new(),
            device_workflow: Checkpoint::default(),
            door_workflow: Checkpoint::default(),
            jobs: BTreeMap::new(),
            reconciler: ReconcilerState {
                just_started: true,
                ..Default::default()
            },
            guests: Vec::new(),
            devices: Vec::new(),
            doors: Vec::new(),
            manual_on: BTreeMap::new(),
            crash_percent_per_mille,
            checks: Default::default(),
            violations: Vec::new(),
            trace,
        }
    }

    pub fn at(&mut self, delay_seconds: i64, action: Action) {
        self.at_time(self.now + Duration::seconds(delay_seconds), action);
    }

    pub fn at_time(&mut self, when: DateTime<Utc>, action: Action) {
        self.queue_seq += 1;
        self.queue.insert((when, self.queue_seq), action);
    }

    /// Tells the outside models the time, and lets device timers fire.
    pub fn sync_clocks(&mut self) {
        lock(&self.stripe).now = self.now;
        lock(&self.ttlock).now = self.now;
        let mut shelly = lock(&self.shelly);
        shelly.now = self.now;
        shelly.tick();
    }

    // ----- commands -------------------------------------------------------------------

    /// Executes `command` like `CommandBus::execute`: load, handle (calls out through the
    /// ports), append with the loaded version, re-run on a conflict.
    pub fn execute<A>(
        &mut self,
        id: &str,
        command: A::Command,
        services: &A::Services,
    ) -> Result<Vec<Entry>, Refusal>
    where
        A: Aggregate + Clone + Default,
        A::Command: Clone,
        Store: Streams<A>,
    {
        for _ in 0..latchkey::cqrs::CONFLICT_ATTEMPTS_MAX {
            let (mut state, version) = self.store.load::<A>(id);
            let sink = EventSink::default();
            let handled =
                futures::executor::block_on(state.handle(command.clone(), services, &sink));
            let events = futures::executor::block_on(sink.collect());
            self.deliver_racing_webhooks();
            if let Err(error) = handled {
                return Err(Refusal::User(error.to_string()));
            }
            if !events.is_empty()
                && self.rng.next_u64() % 1000 < u64::from(self.crash_percent_per_mille)
            {
                self.crash(&format!(
                    "before appending {} events to {} {id}",
                    events.len(),
                    A::TYPE
                ));
                return Err(Refusal::Crashed);
            }
            if let Some(entries) = self.store.commit(id, version, state, events) {
                for entry in &entries {
                    self.trace.fact(entry);
                }
                self.sync_started_sessions(&entries);
                return Ok(entries);
            }
            self.trace.note(
                self.now,
                &format!("conflict on {} {id}; re-running the command", A::TYPE),
            );
        }
        Err(Refusal::Conflict)
    }

    fn sync_started_sessions(&mut self, entries: &[Entry]) {
        for entry in entries {
            if entry.event_type == "SessionActivated" {
                if let Ok(id) = Uuid::parse_str(&entry.aggregate_id) {
                    lock(&self.stripe).started_sessions.insert(id);
                }
            }
        }
    }

    pub fn payment(&mut self, id: Uuid, command: PaymentCommand) -> Result<Vec<Entry>, Refusal> {
        let services = self.payment_services.clone();
        self.execute::<Payment>(&id.to_string(), command, &services)
    }

    pub fn door(&mut self, id: &str, command: DoorCommand) -> Result<Vec<Entry>, Refusal> {
        let services = self.door_services.clone();
        self.execute::<Door>(id, command, &services)
    }

    pub fn device(&mut self, id: &str, command: DeviceCommand) -> Result<Vec<Entry>, Refusal> {
        let services = self.device_services.clone();
        self.execute::<Device>(id, command, &services)
    }

    pub fn session(&mut self, id: &str, command: SessionCommand) -> Result<Vec<Entry>, Refusal> {
        let services = self.session_services.clone();
        self.execute::<DeviceSession>(id, command, &services)
    }

    pub fn payment_gateway(&self) -> Arc<dyn latchkey_aggregates::payment::PaymentGateway> {
        self.payment_services.gateway.clone()
    }

    pub fn session_services_relay(
        &self,
    ) -> Arc<dyn latchkey_aggregates::session::services::RelayGateway> {
        self.session_services.relay.clone()
    }

    /// The process dies: what lived only in memory is gone; the journal, the inbox, the
    /// checkpoints and the scheduled jobs survive.
    pub fn crash(&mut self, at_point: &str) {
        self.trace
            .note(self.now, &format!("CRASH {at_point}; restarting"));
        self.reconciler = ReconcilerState {
            just_started: true,
            ..Default::default()
        };
    }

    // ----- Stripe webhooks: the endpoint and the inbox ----------------------------------

    /// Delivers webhooks created during the command in flight, before it commits.
    pub fn deliver_racing_webhooks(&mut self) {
        let racing: Vec<String> = std::mem::take(&mut lock(&self.stripe).racing);
        for event_id in racing {
            self.trace.note(
                self.now,
                &format!("webhook {event_id} races the call that caused it"),
            );
            if self.endpoint(&event_id) {
                self.process_delivery(&event_id);
            }
        }
    }

    /// `POST /api/stripe/webhook`: store durably, then answer 2xx. Returns whether the
    /// delivery is in the inbox.
    pub fn endpoint(&mut self, event_id: &str) -> bool {
        if latchkey_aggregates::planted::active(
            latchkey_aggregates::planted::Bug::WebhookAckedBeforeDurable,
        ) {
            self.acked.insert(event_id.to_string());
            if self.rng.chance(20) {
                self.crash(&format!(
                    "after acknowledging {event_id}, before storing it"
                ));
                return false;
            }
        }
        let now = self.now;
        let inserted = !self.inbox.contains_key(event_id);
        self.inbox.entry(event_id.to_string()).or_insert(InboxRow {
            status: InboxStatus::Received,
            attempts: 0,
            due: now,
            last_error: None,
        });
        self.acked.insert(event_id.to_string());
        inserted
    }

    /// One processing attempt of one delivery (the mirror of `stripe_facts::apply`).
    pub fn process_delivery(&mut self, event_id: &str) {
        let Some(event) = lock(&self.stripe).event(event_id).cloned() else {
            return;
        };
        let Some(row) = self.inbox.get(event_id).cloned() else {
            return;
        };
        if matches!(row.status, InboxStatus::Processed | InboxStatus::Ignored) {
            return;
        }
        let outcome = self.apply_stripe_event(&event);
        let now = self.now;
        let Some(row) = self.inbox.get_mut(event_id) else {
            return;
        };
        row.attempts += 1;
        match outcome {
            Ok(true) => row.status = InboxStatus::Processed,
            Ok(false) => row.status = InboxStatus::Ignored,
            Err(error) => {
                row.status = InboxStatus::Failed;
                let pause = backoff_seconds(2, 3600, row.attempts);
                row.due = now + Duration::seconds(pause);
                row.last_error = Some(error);
            }
        }
        let status = row.status;
        self.trace
            .note(now, &format!("inbox {event_id}: {status:?}"));
    }

    /// `Ok(true)` applied, `Ok(false)` ignored, `Err` retry later.
    fn apply_stripe_event(&mut self, event: &Value) -> Result<bool, String> {
        let (references, command) = match translate(event, self.now) {
            Err(_) | Ok(Translation::Ignore { .. }) => return Ok(false),
            Ok(Translation::Apply {
                references,
                command,
            }) => (references, command),
        };
        let found = references.iter().find_map(|reference| match reference {
            PaymentReference::PaymentId(id) => Some(*id),
            PaymentReference::CheckoutSession(id)
            | PaymentReference::PaymentIntent(id)
            | PaymentReference::Charge(id) => self.refs.get(id).copied(),
        });
        let Some(payment_id) = found else {
            return match references.first() {
                Some(PaymentReference::Charge(_)) => {
                    Err("no payment known yet for the charge".into())
                }
                Some(PaymentReference::PaymentIntent(_))
                    if references
                        .iter()
                        .any(|r| matches!(r, PaymentReference::Charge(_))) =>
                {
                    Err("no payment known yet for the payment intent".into())
                }
                _ => Ok(false),
            };
        };
        let object = &event["data"]["object"];
        for field in ["id", "payment_intent", "latest_charge", "charge"] {
            if let Some(id) = object
                .get(field)
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty())
            {
                self.refs.entry(id.to_string()).or_insert(payment_id);
            }
        }
        match self.payment(payment_id, command) {
            Ok(_) => Ok(true),
            Err(Refusal::User(message)) if message == PaymentError::NotStarted.to_string() => {
                Ok(false)
            }
            Err(Refusal::User(message)) => Err(format!("the ledger refused this fact: {message}")),
            Err(other) => Err(format!("could not record the fact: {other:?}")),
        }
    }
}

/// `base · 2^(attempt-1)` seconds, at most `max` (the mirror of `schedule::backoff`).
pub fn backoff_seconds(base: i64, max: i64, attempt: u32) -> i64 {
    let factor = 2_i64.saturating_pow(attempt.saturating_sub(1).min(20));
    base.saturating_mul(factor).min(max)
}

pub fn relay_key(
    devices: &[(String, String, Vec<UsagePlan>)],
    device: &str,
) -> Option<(String, u32)> {
    devices
        .iter()
        .find(|(uid, _, _)| uid == device)
        .map(|(_, shelly, _)| (shelly.clone(), 0))
}

pub fn new_relay() -> Relay {
    Relay::default()
}

pub fn new_lock(has_gateway: bool) -> Lock {
    Lock {
        has_gateway,
        passcodes: BTreeMap::new(),
    }
}

pub fn door_target(payment: &Payment) -> Option<String> {
    match payment.target() {
        Some(PaymentTarget::Door { door_uid }) => Some(door_uid.clone()),
        _ => None,
    }
}

pub fn price(amount: i64) -> Money {
    eur(amount)
}

pub fn system() -> Actor {
    Actor::System
}
