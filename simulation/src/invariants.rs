//! The invariants of DESIGN.md, checked after every step where cheap and at the end of
//! every run. Each violation is one line naming the invariant family (money, access,
//! guests, ledger), the payment/session/device and what was found.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use latchkey_aggregates::payment::PaymentStatus;
use latchkey_aggregates::session::SessionState;
use serde_json::Value;
use uuid::Uuid;

use crate::outside::lock;
use crate::stripe::IntentStatus;
use crate::world::{InboxStatus, World};

/// A relay ON with no paying session, no manual ON and no session ending is corrected by
/// the sweep (every 5 min) once the relay answers; the sweep does not retry a failed OFF
/// sooner, so 20 minutes covers an offline window plus a few sweeps whose read or OFF met
/// a rate limit.
pub const UNPAID_ON_MAX_SECONDS: i64 = 1200;
/// "OFF within a second in the normal case": allowing the reconciler's own pacing (it
/// passes at least every 5 s) and one retry, the relay is OFF 45 s after the end when the
/// relay was reachable all along.
pub const OFF_AFTER_END_MAX_SECONDS: i64 = 45;
/// A manual ON is bounded by the timer the Device gives it (4 hours) and justified that
/// long.
pub const MANUAL_ON_MAX_SECONDS: i64 =
    latchkey_aggregates::device::MANUAL_ON_AUTO_OFF_SECONDS as i64;
/// A refunded or disputed payment's door code is deleted within this time when the lock
/// is reachable (TTLock outages here last at most 5 minutes; retries back off from 5 s).
pub const REVOKE_MAX_SECONDS: i64 = 1200;

#[derive(Default)]
pub struct Tracking {
    pub unpaid_on_since: BTreeMap<String, DateTime<Utc>>,
    pub must_revoke_since: BTreeMap<(Uuid, &'static str), DateTime<Utc>>,
    pub behind_back: BTreeMap<String, DateTime<Utc>>,
}

impl World {
    fn violation(&mut self, text: String) {
        if !self.violations.contains(&text) {
            self.trace.note(self.now, &format!("VIOLATION {text}"));
            self.violations.push(text);
        }
    }

    /// After every step.
    pub fn check_step(&mut self) {
        let found: Vec<String> = std::mem::take(&mut lock(&self.stripe).violations);
        for text in found {
            self.violation(text);
        }
        self.check_relays();
        self.check_door_codes();
        crate::guest_pages::check(self)
            .into_iter()
            .for_each(|text| self.violation(text));
    }

    fn check_relays(&mut self) {
        let now = self.now;
        let devices = self.devices.clone();
        for (device, shelly, _) in devices {
            let relay = lock(&self.shelly)
                .relays
                .get(&(shelly, 0))
                .cloned()
                .unwrap_or_default();
            if !relay.on {
                self.checks.unpaid_on_since.remove(&device);
                continue;
            }
            let mut live = false;
            let mut last_end: Option<DateTime<Utc>> = None;
            let mut ended_session = None;
            for (id, stream) in &self.store.sessions {
                let session = &stream.state;
                if session
                    .terms()
                    .is_none_or(|terms| terms.device_uid != device)
                {
                    continue;
                }
                match session.state() {
                    Some(SessionState::Opened | SessionState::Active) => live = true,
                    Some(SessionState::Finishing) => {
                        let end = session.ends_at();
                        if end > last_end {
                            last_end = end;
                            ended_session = Some(id.clone());
                        }
                    }
                    Some(state) if state.is_ended() => {
                        let end = session
                            .ended_at()
                            .max(session.ends_at().filter(|end| *end <= now));
                        if end > last_end {
                            last_end = end;
                            ended_session = Some(id.clone());
                        }
                    }
                    _ => {}
                }
            }
            let manual = self
                .manual_on
                .get(&device)
                .is_some_and(|at| now - *at < Duration::seconds(MANUAL_ON_MAX_SECONDS));
            if live || manual {
                self.checks.unpaid_on_since.remove(&device);
                continue;
            }
            if let (Some(end), Some(session)) = (last_end, ended_session) {
                let excused = !relay.on_by_command
                    || relay.last_fault_at.is_some_and(|fault| fault >= end)
                    || self
                        .checks
                        .behind_back
                        .get(&device)
                        .is_some_and(|at| *at >= end)
                    || self
                        .manual_on
                        .get(&device)
                        .is_some_and(|at| *at >= end - Duration::seconds(MANUAL_ON_MAX_SECONDS));
                if !excused && now - end > Duration::seconds(OFF_AFTER_END_MAX_SECONDS) {
                    self.violation(format!(
                        "access: relay of {device} still ON more than {OFF_AFTER_END_MAX_SECONDS}s after session {session} ended, the relay reachable throughout"
                    ));
                }
            }
            let since = *self
                .checks
                .unpaid_on_since
                .entry(device.clone())
                .or_insert(now);
            if now - since > Duration::seconds(UNPAID_ON_MAX_SECONDS) {
                self.violation(format!(
                    "access: relay of {device} ON with no paying session since {since}"
                ));
            }
        }
    }

    fn check_door_codes(&mut self) {
        let now = self.now;
        let mut due: Vec<(Uuid, &'static str)> = Vec::new();
        for stream in self.store.payments.values() {
            let payment = &stream.state;
            let Some(id) = payment.payment_id() else {
                continue;
            };
            let fully_refunded = payment.status() == PaymentStatus::Refunded;
            if fully_refunded || payment.is_disputed() {
                due.push((
                    id,
                    if fully_refunded {
                        "refunded"
                    } else {
                        "disputed"
                    },
                ));
            }
        }
        for (id, why) in due {
            let since = *self
                .checks
                .must_revoke_since
                .entry((id, why))
                .or_insert(now);
            if now - since <= Duration::seconds(REVOKE_MAX_SECONDS) {
                continue;
            }
            let live = lock(&self.ttlock).locks.values().any(|lock| {
                lock.has_gateway
                    && lock
                        .passcodes
                        .values()
                        .any(|code| code.payment_id == id && !code.deleted && code.valid_to > now)
            });
            if live {
                self.violation(format!(
                    "access: live door code for {why} payment {id} since {since}"
                ));
            }
        }
    }

    /// At the end of the run, once everything had hours to settle.
    pub fn check_end(&mut self) {
        self.check_money();
        self.check_sessions_and_guests();
        crate::guest_pages::check_all(self)
            .into_iter()
            .for_each(|text| self.violation(text));
        self.check_ledger();
    }

    fn check_money(&mut self) {
        let intents: Vec<_> = lock(&self.stripe).intents.values().cloned().collect();
        for intent in intents {
            let id = intent.payment_id;
            let (payment, _) = self
                .store
                .load::<latchkey_aggregates::payment::Payment>(&id.to_string());
            let received = payment.amount_received().map_or(0, |m| m.amount_minor);
            let refunded = payment.amount_refunded().map_or(0, |m| m.amount_minor);
            if received != intent.amount_received {
                self.violation(format!(
                    "money: payment {id} received {received} in the journal, {} at Stripe",
                    intent.amount_received
                ));
            }
            if refunded != intent.amount_refunded {
                self.violation(format!(
                    "money: payment {id} refunded {refunded} in the journal, {} at Stripe",
                    intent.amount_refunded
                ));
            }
            if refunded > received || intent.amount_refunded > intent.amount_received {
                self.violation(format!(
                    "money: payment {id} refunded more than it received"
                ));
            }
            if intent.status == IntentStatus::RequiresCapture {
                let session = self.access_of(&intent);
                self.violation(format!(
                    "money: authorization of payment {id} neither captured nor released (payment {}, {session})",
                    payment.status()
                ));
            }
            if received > 0 {
                let refundable = payment.refundable().map_or(0, |m| m.amount_minor);
                let truth = intent.amount_received - intent.amount_refunded;
                if refundable != truth {
                    self.violation(format!("money: payment {id} says {refundable} is still refundable; Stripe holds {truth}"));
                }
            }
        }
        let stripe = lock(&self.stripe);
        let mut keys = BTreeSet::new();
        let twice: Vec<String> = stripe
            .refunds
            .iter()
            .filter(|refund| !keys.insert(refund.idempotency_key.clone()))
            .map(|refund| {
                format!(
                    "money: Stripe refunded twice for request {}",
                    refund.idempotency_key
                )
            })
            .collect();
        drop(stripe);
        for text in twice {
            self.violation(text);
        }
    }

    fn check_sessions_and_guests(&mut self) {
        let sessions: Vec<(String, Option<SessionState>)> = self
            .store
            .sessions
            .iter()
            .map(|(id, s)| (id.clone(), s.state.state()))
            .collect();
        for (id, state) in &sessions {
            if !state.is_some_and(|state| state.is_ended()) {
                self.violation(format!("access: session {id} never ended ({state:?})"));
            }
        }
        let activated: BTreeSet<String> = self
            .store
            .journal
            .iter()
            .filter(|e| e.event_type == "SessionActivated")
            .map(|e| e.aggregate_id.clone())
            .collect();
        let coded: BTreeSet<String> = self
            .store
            .journal
            .iter()
            .filter(|e| e.event_type == "AccessCodeIssued")
            .filter_map(|e| {
                e.payload
                    .get("payment_id")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .collect();
        let intents: Vec<_> = lock(&self.stripe).intents.values().cloned().collect();
        for intent in intents {
            let paid = intent.ever_authorized || intent.amount_received > 0;
            if !paid {
                continue;
            }
            let id = intent.payment_id.to_string();
            // A disputed charge goes back to the guest through their bank (the model never
            // lets us win a dispute), so the guest is whole without a refund from us.
            let made_whole = intent.status == IntentStatus::Canceled
                || intent.disputed
                || (intent.amount_received > 0 && intent.amount_refunded == intent.amount_received);
            let served = if intent.manual_capture {
                activated.contains(&id)
            } else {
                coded.contains(&id)
            };
            if !served && !made_whole {
                let kind = if intent.manual_capture {
                    "device"
                } else {
                    "door"
                };
                self.violation(format!(
                    "guests: {kind} payment {id} paid but neither served nor made whole ({})",
                    self.access_of(&intent)
                ));
            }
        }
    }

    /// What the guest got: the session's state, or the door code's.
    fn access_of(&self, intent: &crate::stripe::Intent) -> String {
        let id = intent.payment_id;
        if intent.manual_capture {
            let (session, _) = self
                .store
                .load::<latchkey_aggregates::session::DeviceSession>(&id.to_string());
            return session.state().map_or("no session".to_string(), |state| {
                format!("session {state:?}")
            });
        }
        self.store
            .doors
            .values()
            .find_map(|door| door.state.access_code(id))
            .map_or("no code requested".to_string(), |code| {
                format!("code {:?}", code.state)
            })
    }

    fn check_ledger(&mut self) {
        let acked: Vec<String> = self.acked.iter().cloned().collect();
        for event_id in acked {
            match self.inbox.get(&event_id) {
                None => self.violation(format!(
                    "ledger: webhook {event_id} acknowledged but not in the inbox"
                )),
                Some(row)
                    if !matches!(row.status, InboxStatus::Processed | InboxStatus::Ignored) =>
                {
                    let error = row.last_error.clone().unwrap_or_default();
                    self.violation(format!(
                        "ledger: webhook {event_id} never processed ({} attempts): {error}",
                        row.attempts
                    ));
                }
                _ => {}
            }
        }
        // One Stripe event may be recorded as several facts by one command (a refund report
        // and the total it changed), but never as the same fact twice.
        let mut facts: BTreeMap<(String, String), usize> = BTreeMap::new();
        for entry in &self.store.journal {
            if entry.aggregate_type != "Payment"
                || matches!(
                    entry.event_type.as_str(),
                    "StripeReportIgnored" | "DuplicateConfirmationIgnored"
                )
            {
                continue;
            }
            if let Some(id) = entry
                .payload
                .pointer("/stripe_event/id")
                .and_then(Value::as_str)
            {
                *facts
                    .entry((id.to_string(), entry.event_type.clone()))
                    .or_default() += 1;
            }
        }
        for ((event_id, fact), count) in facts {
            if count > 1 {
                self.violation(format!(
                    "ledger: Stripe event {event_id} recorded as {fact} {count} times"
                ));
            }
        }
        let end = self.store.journal.len();
        for (name, checkpoint) in [
            ("workflow:device_sessions", self.device_workflow.clone()),
            ("workflow:door_access", self.door_workflow.clone()),
        ] {
            if checkpoint.position < end {
                let error = checkpoint.last_error.unwrap_or_default();
                self.violation(format!(
                    "ledger: {name} stalled at #{} of {end}: {error}",
                    checkpoint.position + 1
                ));
            }
        }
    }
}
