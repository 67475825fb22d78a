//! Stripe, modelled in memory after `/work/shared/reference/stripe.md` and `src/sim/stripe`:
//! PaymentIntents (automatic or manual capture), charges with a cumulative
//! `amount_refunded`, refunds, disputes, Idempotency-Key replay, and the events Stripe
//! would send. The [`PaymentGateway`] port in front of it injects the faults: a call that
//! never reached Stripe, an answer lost after Stripe acted, a webhook racing the answer.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use latchkey_aggregates::payment::services::{
    CancelAuthorizationRequest, CaptureRequest, GatewayError, PaymentGateway, RefundReceipt,
    RefundRequest,
};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntentStatus {
    RequiresPaymentMethod,
    RequiresCapture,
    Succeeded,
    Canceled,
}

#[derive(Clone, Debug)]
pub struct Intent {
    pub id: String,
    pub payment_id: Uuid,
    pub checkout_session: String,
    pub manual_capture: bool,
    pub amount: i64,
    pub currency: String,
    pub status: IntentStatus,
    pub amount_capturable: i64,
    pub amount_received: i64,
    pub charge: Option<String>,
    pub amount_refunded: i64,
    pub disputed: bool,
    pub ever_authorized: bool,
}

/// Percentages of each fault at the port, chosen per seed.
#[derive(Clone, Copy, Debug, Default)]
pub struct StripeFaults {
    pub unreachable: u32,
    pub answer_lost: u32,
    pub webhook_races_answer: u32,
    pub capture_declined: u32,
    pub refund_refused: u32,
}

#[derive(Clone, Debug)]
pub struct RefundRecord {
    pub refund_id: String,
    pub payment_intent: String,
    pub amount: i64,
    pub idempotency_key: String,
}

pub struct StripeModel {
    pub now: DateTime<Utc>,
    pub faults: StripeFaults,
    rng: Rng,
    pub intents: BTreeMap<String, Intent>,
    /// Every event Stripe created, in order.
    pub events: Vec<Value>,
    /// Events created since the world last looked (it schedules their deliveries).
    pub fresh: Vec<String>,
    /// Events whose delivery races the answer of the call that caused them.
    pub racing: Vec<String>,
    idempotency: BTreeMap<String, Result<Option<String>, GatewayError>>,
    pub refunds: Vec<RefundRecord>,
    /// Invariant breaches seen at call time (a capture with no started session).
    pub violations: Vec<String>,
    /// Payments whose session has started, told by the world before each step.
    pub started_sessions: std::collections::BTreeSet<Uuid>,
    counter: u64,
}

impl StripeModel {
    pub fn new(rng: Rng, faults: StripeFaults) -> Self {
        StripeModel {
            now: DateTime::<Utc>::MIN_UTC,
            faults,
            rng,
            intents: BTreeMap::new(),
            events: Vec::new(),
            fresh: Vec::new(),
            racing: Vec::new(),
            idempotency: BTreeMap::new(),
            refunds: Vec::new(),
            violations: Vec::new(),
            started_sessions: Default::default(),
            counter: 0,
        }
    }

    fn next_id(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}_{:06}", self.counter)
    }

    /// A Checkout Session and its PaymentIntent, as `payments::checkout` creates them.
    pub fn create_checkout(
        &mut self,
        payment_id: Uuid,
        amount: i64,
        currency: &str,
        manual_capture: bool,
    ) -> (String, String) {
        let session = self.next_id("cs");
        let intent = self.next_id("pi");
        self.intents.insert(
            intent.clone(),
            Intent {
                id: intent.clone(),
                payment_id,
                checkout_session: session.clone(),
                manual_capture,
                amount,
                currency: currency.to_string(),
                status: IntentStatus::RequiresPaymentMethod,
                amount_capturable: 0,
                amount_received: 0,
                charge: None,
                amount_refunded: 0,
                disputed: false,
                ever_authorized: false,
            },
        );
        (session, intent)
    }

    fn emit(&mut self, event_type: &str, object: Value) {
        self.emit_caused_by(event_type, object, None);
    }

    /// An event; one caused by an API request names its Idempotency-Key in `request`, as
    /// Stripe does (that is how a `charge.refunded` is tied to our refund request).
    fn emit_caused_by(&mut self, event_type: &str, object: Value, idempotency_key: Option<&str>) {
        let id = self.next_id("evt");
        let request = match idempotency_key {
            Some(key) => json!({"id": self.next_id("req"), "idempotency_key": key}),
            None => json!({"id": null, "idempotency_key": null}),
        };
        let event = json!({
            "id": id, "object": "event", "type": event_type, "api_version": "2024-06-20",
            "created": self.now.timestamp(), "livemode": false, "data": {"object": object},
            "request": request,
        });
        self.events.push(event);
        self.fresh.push(id);
    }

    pub fn event(&self, id: &str) -> Option<&Value> {
        self.events
            .iter()
            .find(|event| event.get("id").and_then(Value::as_str) == Some(id))
    }

    fn metadata(intent: &Intent) -> Value {
        let kind = if intent.manual_capture {
            "device"
        } else {
            "door"
        };
        json!({"latchkey_payment_id": intent.payment_id.to_string(), "latchkey_kind": kind})
    }

    fn intent_object(intent: &Intent) -> Value {
        let status = match intent.status {
            IntentStatus::RequiresPaymentMethod => "requires_payment_method",
            IntentStatus::RequiresCapture => "requires_capture",
            IntentStatus::Succeeded => "succeeded",
            IntentStatus::Canceled => "canceled",
        };
        json!({
            "id": intent.id, "object": "payment_intent", "amount": intent.amount,
            "amount_capturable": intent.amount_capturable, "amount_received": intent.amount_received,
            "currency": intent.currency, "status": status, "latest_charge": intent.charge,
            "capture_method": if intent.manual_capture { "manual" } else { "automatic" },
            "metadata": Self::metadata(intent),
        })
    }

    fn charge_object(intent: &Intent) -> Value {
        json!({
            "id": intent.charge, "object": "charge", "payment_intent": intent.id,
            "amount": intent.amount_received, "amount_captured": intent.amount_received,
            "amount_refunded": intent.amount_refunded, "currency": intent.currency,
            "refunded": intent.amount_refunded == intent.amount_received,
            "metadata": Self::metadata(intent),
        })
    }

    fn session_object(intent: &Intent, payment_status: &str) -> Value {
        json!({
            "id": intent.checkout_session, "object": "checkout.session", "mode": "payment",
            "payment_intent": intent.id, "payment_status": payment_status,
            "amount_total": intent.amount, "currency": intent.currency,
            "metadata": Self::metadata(intent),
        })
    }

    /// The guest's card was declined (they may try again).
    pub fn decline(&mut self, intent_id: &str) {
        let Some(intent) = self.intents.get(intent_id).cloned() else {
            return;
        };
        if intent.status != IntentStatus::RequiresPaymentMethod {
            return;
        }
        let mut object = Self::intent_object(&intent);
        object["last_payment_error"] = json!({"code": "card_declined", "decline_code": "insufficient_funds", "message": "Your card has insufficient funds."});
        self.emit("payment_intent.payment_failed", object);
    }

    /// The guest paid: collected (door) or authorized for manual capture (device).
    pub fn pay(&mut self, intent_id: &str) {
        let Some(mut intent) = self.intents.get(intent_id).cloned() else {
            return;
        };
        if intent.status != IntentStatus::RequiresPaymentMethod {
            return;
        }
        if intent.manual_capture {
            intent.status = IntentStatus::RequiresCapture;
            intent.amount_capturable = intent.amount;
            intent.ever_authorized = true;
            self.intents.insert(intent.id.clone(), intent.clone());
            self.emit(
                "checkout.session.completed",
                Self::session_object(&intent, "unpaid"),
            );
            self.emit(
                "payment_intent.amount_capturable_updated",
                Self::intent_object(&intent),
            );
        } else {
            intent.status = IntentStatus::Succeeded;
            intent.amount_received = intent.amount;
            intent.charge = Some(self.next_id("ch"));
            self.intents.insert(intent.id.clone(), intent.clone());
            self.emit("charge.succeeded", Self::charge_object(&intent));
            self.emit("payment_intent.succeeded", Self::intent_object(&intent));
            self.emit(
                "checkout.session.completed",
                Self::session_object(&intent, "paid"),
            );
        }
    }

    /// The guest walked away: the Checkout Session expires and its intent is cancelled.
    pub fn expire_checkout(&mut self, intent_id: &str) {
        let Some(mut intent) = self.intents.get(intent_id).cloned() else {
            return;
        };
        if intent.status != IntentStatus::RequiresPaymentMethod {
            return;
        }
        intent.status = IntentStatus::Canceled;
        self.intents.insert(intent.id.clone(), intent.clone());
        self.emit(
            "checkout.session.expired",
            Self::session_object(&intent, "unpaid"),
        );
        let mut object = Self::intent_object(&intent);
        object["cancellation_reason"] = json!("abandoned");
        self.emit("payment_intent.canceled", object);
    }

    /// An uncaptured authorization lapses (Stripe cancels it after 7 days; here, sooner).
    pub fn lapse_authorization(&mut self, intent_id: &str) {
        let Some(mut intent) = self.intents.get(intent_id).cloned() else {
            return;
        };
        if intent.status != IntentStatus::RequiresCapture {
            return;
        }
        intent.status = IntentStatus::Canceled;
        intent.amount_capturable = 0;
        self.intents.insert(intent.id.clone(), intent.clone());
        let mut object = Self::intent_object(&intent);
        object["cancellation_reason"] = json!("automatic");
        self.emit("payment_intent.canceled", object);
    }

    /// The guest's bank opens a dispute on a collected charge.
    pub fn dispute(&mut self, intent_id: &str) {
        let Some(mut intent) = self.intents.get(intent_id).cloned() else {
            return;
        };
        if intent.status != IntentStatus::Succeeded || intent.disputed {
            return;
        }
        intent.disputed = true;
        self.intents.insert(intent.id.clone(), intent.clone());
        let id = self.next_id("dp");
        let object = json!({
            "id": id, "object": "dispute", "charge": intent.charge, "payment_intent": intent.id,
            "amount": intent.amount_received - intent.amount_refunded, "currency": intent.currency,
            "reason": "fraudulent", "status": "needs_response",
        });
        self.emit("charge.dispute.created", object);
    }

    /// A key seen before replays the first answer (Stripe keeps keys for 24 hours).
    fn replay(&self, key: &str) -> Option<Result<Option<String>, GatewayError>> {
        self.idempotency.get(key).cloned()
    }

    /// Runs `act` unless the call is lost on the way in; stores its answer under `key`;
    /// may lose the answer on the way back, and may let the webhooks it caused race it.
    fn call(
        &mut self,
        key: &str,
        act: impl FnOnce(&mut Self) -> Result<Option<String>, GatewayError>,
    ) -> Result<Option<String>, GatewayError> {
        if self.rng.chance(self.faults.unreachable) {
            return Err(GatewayError::retryable(
                "simulated: Stripe could not be reached",
            ));
        }
        let answer = match self.replay(key) {
            Some(answer) => answer,
            None => {
                let before = self.fresh.len();
                let answer = act(self);
                if answer.is_ok() || answer.as_ref().is_err_and(|e| {
                    e.kind != latchkey_aggregates::payment::services::GatewayErrorKind::Retryable
                }) {
                    self.idempotency.insert(key.to_string(), answer.clone());
                }
                if self.fresh.len() > before && self.rng.chance(self.faults.webhook_races_answer) {
                    let raced: Vec<String> = self.fresh[before..].to_vec();
                    self.racing.extend(raced);
                }
                answer
            }
        };
        if self.rng.chance(self.faults.answer_lost) {
            return Err(GatewayError::retryable(
                "simulated: Stripe's answer was lost (timeout)",
            ));
        }
        answer
    }

    fn capture(&mut self, request: &CaptureRequest) -> Result<Option<String>, GatewayError> {
        let Some(mut intent) = self.intents.get(&request.payment_intent_id).cloned() else {
            return Err(GatewayError::permanent(
                "resource_missing: no such payment_intent",
            ));
        };
        if intent.status != IntentStatus::RequiresCapture {
            return Err(GatewayError::permanent(
                "payment_intent_unexpected_state: this PaymentIntent could not be captured",
            ));
        }
        if request.amount_to_capture.amount_minor > intent.amount_capturable {
            return Err(GatewayError::permanent(
                "amount_to_capture exceeds amount_capturable",
            ));
        }
        if self.rng.chance(self.faults.capture_declined) {
            return Err(GatewayError::permanent(
                "card_declined: the capture was declined",
            ));
        }
        if !self.started_sessions.contains(&intent.payment_id) {
            self.violations.push(format!(
                "money: captured payment {} whose session never started",
                intent.payment_id
            ));
        }
        intent.status = IntentStatus::Succeeded;
        intent.amount_received = request.amount_to_capture.amount_minor;
        intent.amount_capturable = 0;
        intent.charge = Some(self.next_id("ch"));
        self.intents.insert(intent.id.clone(), intent.clone());
        self.emit("charge.captured", Self::charge_object(&intent));
        self.emit("payment_intent.succeeded", Self::intent_object(&intent));
        Ok(None)
    }

    fn cancel(
        &mut self,
        request: &CancelAuthorizationRequest,
    ) -> Result<Option<String>, GatewayError> {
        let Some(mut intent) = self.intents.get(&request.payment_intent_id).cloned() else {
            return Err(GatewayError::permanent(
                "resource_missing: no such payment_intent",
            ));
        };
        if intent.status != IntentStatus::RequiresCapture {
            return Err(GatewayError::permanent(
                "payment_intent_unexpected_state: this PaymentIntent could not be canceled",
            ));
        }
        intent.status = IntentStatus::Canceled;
        intent.amount_capturable = 0;
        self.intents.insert(intent.id.clone(), intent.clone());
        let mut object = Self::intent_object(&intent);
        object["cancellation_reason"] = json!("requested_by_customer");
        self.emit("payment_intent.canceled", object);
        Ok(None)
    }

    fn refund(&mut self, request: &RefundRequest) -> Result<Option<String>, GatewayError> {
        let Some(mut intent) = self.intents.get(&request.payment_intent_id).cloned() else {
            return Err(GatewayError::permanent(
                "resource_missing: no such payment_intent",
            ));
        };
        if intent.status != IntentStatus::Succeeded {
            return Err(GatewayError::permanent(
                "charge_not_refundable: nothing was collected",
            ));
        }
        if request.amount.amount_minor > intent.amount_received - intent.amount_refunded {
            return Err(GatewayError::permanent(
                "amount_too_large: the refund exceeds what remains on the charge",
            ));
        }
        if self.rng.chance(self.faults.refund_refused) {
            return Err(GatewayError::permanent(
                "charge_disputed: the refund was refused",
            ));
        }
        let refund_id = self.next_id("re");
        intent.amount_refunded += request.amount.amount_minor;
        self.intents.insert(intent.id.clone(), intent.clone());
        self.refunds.push(RefundRecord {
            refund_id: refund_id.clone(),
            payment_intent: intent.id.clone(),
            amount: request.amount.amount_minor,
            idempotency_key: request.idempotency_key.clone(),
        });
        let key = Some(request.idempotency_key.as_str());
        self.emit_caused_by("charge.refunded", Self::charge_object(&intent), key);
        let refund = json!({
            "id": refund_id, "object": "refund", "amount": request.amount.amount_minor,
            "currency": intent.currency, "charge": intent.charge, "payment_intent": intent.id,
            "status": "succeeded", "created": self.now.timestamp(),
            "metadata": {
                "latchkey_payment_id": request.payment_id.to_string(),
                "latchkey_refund_request_id": request.refund_request_id.to_string(),
            },
        });
        self.emit_caused_by("refund.created", refund, key);
        Ok(Some(refund_id))
    }
}

/// The Payment aggregate's port, in front of the model.
pub struct StripePort(pub Arc<Mutex<StripeModel>>);

impl StripePort {
    fn model(&self) -> MutexGuard<'_, StripeModel> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl PaymentGateway for StripePort {
    async fn capture(&self, request: CaptureRequest) -> Result<(), GatewayError> {
        let key = request.idempotency_key.clone();
        self.model()
            .call(&key, |model| model.capture(&request))
            .map(|_| ())
    }

    async fn cancel_authorization(
        &self,
        request: CancelAuthorizationRequest,
    ) -> Result<(), GatewayError> {
        let key = request.idempotency_key.clone();
        self.model()
            .call(&key, |model| model.cancel(&request))
            .map(|_| ())
    }

    async fn refund(&self, request: RefundRequest) -> Result<RefundReceipt, GatewayError> {
        let key = request.idempotency_key.clone();
        let amount = request.amount.clone();
        let refund_id = self.model().call(&key, |model| model.refund(&request))?;
        Ok(RefundReceipt {
            refund_id: refund_id.unwrap_or_default(),
            amount,
            status: latchkey_aggregates::payment::RefundStatus::Succeeded,
        })
    }
}
