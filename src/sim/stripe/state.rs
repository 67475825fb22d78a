//! The simulator's memory: Stripe objects, events, idempotency records, and what the
//! client sent. Every money-moving operation here returns the events it caused, so the
//! caller can deliver them in the order (or disorder) it was told to.

use std::collections::HashMap;

use rand::distributions::Alphanumeric;
use rand::Rng;
use serde_json::{json, Map, Value};

/// The API version our events claim; async-stripe 1.0.0-rc.10 pins this one.
pub const API_VERSION: &str = "2026-09-30.endive";

/// Stripe's error, as the simulator answers it.
#[derive(Clone, Debug, PartialEq)]
pub struct SimError {
    pub status: u16,
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub decline_code: Option<&'static str>,
    pub message: String,
    pub param: Option<String>,
}

impl SimError {
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        SimError {
            status: 400,
            kind: "invalid_request_error",
            code: None,
            decline_code: None,
            message: message.into(),
            param: param.map(str::to_string),
        }
    }

    pub fn missing(kind: &str, id: &str) -> Self {
        SimError {
            status: 404,
            kind: "invalid_request_error",
            code: Some("resource_missing"),
            decline_code: None,
            message: format!("No such {kind}: '{id}'"),
            param: Some("id".to_string()),
        }
    }

    /// `{"error": {...}}` as Stripe shapes it.
    pub fn body(&self) -> Value {
        let mut error = Map::new();
        error.insert("type".into(), json!(self.kind));
        error.insert("message".into(), json!(self.message));
        if let Some(code) = self.code {
            error.insert("code".into(), json!(code));
            error.insert(
                "doc_url".into(),
                json!(format!("https://stripe.com/docs/error-codes/{code}")),
            );
        }
        if let Some(decline) = self.decline_code {
            error.insert("decline_code".into(), json!(decline));
        }
        if let Some(param) = &self.param {
            error.insert("param".into(), json!(param));
        }
        json!({ "error": error })
    }
}

/// What a test card does at checkout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CardOutcome {
    Succeeds,
    Declined {
        decline_code: &'static str,
        message: &'static str,
    },
    RequiresAuthentication,
}

/// The test cards of Stripe's documentation that the simulator knows.
pub fn card_outcome(number: &str) -> Option<CardOutcome> {
    let digits: String = number.chars().filter(char::is_ascii_digit).collect();
    match digits.as_str() {
        "4242424242424242" | "4000000000000077" => Some(CardOutcome::Succeeds),
        "4000000000000002" => Some(CardOutcome::Declined {
            decline_code: "generic_decline",
            message: "Your card was declined.",
        }),
        "4000000000009995" => Some(CardOutcome::Declined {
            decline_code: "insufficient_funds",
            message: "Your card has insufficient funds.",
        }),
        "4100000000000019" => Some(CardOutcome::Declined {
            decline_code: "fraudulent",
            message: "Your card was declined.",
        }),
        "4000002500003155" | "4000002760003184" => Some(CardOutcome::RequiresAuthentication),
        _ => None,
    }
}

pub fn new_id(prefix: &str) -> String {
    let suffix: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(24)
        .map(char::from)
        .collect();
    format!("{prefix}_{suffix}")
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The request that caused an event (`null` fields for customer-driven ones).
#[derive(Clone, Debug, Default)]
pub struct Origin {
    pub request_id: Option<String>,
    pub idempotency_key: Option<String>,
}

/// A stored idempotent response.
#[derive(Clone, Debug)]
pub struct IdempotentRecord {
    pub fingerprint: String,
    pub status: u16,
    pub body: Value,
}

/// One request the client sent, for assertions.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub idempotency_key: Option<String>,
    pub stripe_version: Option<String>,
    pub body: String,
    pub status: u16,
    pub replayed: bool,
}

#[derive(Default)]
pub struct SimState {
    pub sessions: HashMap<String, Value>,
    pub intents: HashMap<String, Value>,
    pub charges: HashMap<String, Value>,
    pub refunds: HashMap<String, Value>,
    pub disputes: HashMap<String, Value>,
    /// Every event, in creation order.
    pub events: Vec<Value>,
    pub idempotency: HashMap<String, IdempotentRecord>,
    pub requests: Vec<RecordedRequest>,
    /// PaymentIntents whose next capture the issuer declines, with the decline code.
    pub capture_declines: HashMap<String, &'static str>,
}

/// Form parameters in Stripe's bracket notation, e.g. `metadata[latchkey_kind]`.
pub struct Params(pub Vec<(String, String)>);

impl Params {
    pub fn parse(body: &str) -> Self {
        Params(
            url::form_urlencoded::parse(body.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn int(&self, key: &str) -> Result<Option<i64>, SimError> {
        self.get(key)
            .map(|raw| {
                raw.parse()
                    .map_err(|_| SimError::invalid(format!("Invalid integer: {raw}"), Some(key)))
            })
            .transpose()
    }

    /// `prefix[key]=value` pairs as a map (one level).
    pub fn map(&self, prefix: &str) -> Map<String, Value> {
        let start = format!("{prefix}[");
        self.0
            .iter()
            .filter_map(|(k, v)| {
                let rest = k.strip_prefix(&start)?.strip_suffix(']')?;
                (!rest.contains('[')).then(|| (rest.to_string(), json!(v)))
            })
            .collect()
    }

    /// A canonical form of the parameters for idempotency comparison.
    pub fn fingerprint(&self, method: &str, path: &str) -> String {
        let mut pairs = self.0.clone();
        pairs.sort();
        format!("{method} {path} {pairs:?}")
    }
}

fn event(kind: &str, object: &Value, origin: &Origin) -> Value {
    json!({
        "id": new_id("evt"),
        "object": "event",
        "api_version": API_VERSION,
        "created": now(),
        "data": { "object": object },
        "livemode": false,
        "pending_webhooks": 1,
        "request": { "id": origin.request_id, "idempotency_key": origin.idempotency_key },
        "type": kind,
    })
}

impl SimState {
    fn record_events(&mut self, events: Vec<Value>) -> Vec<Value> {
        self.events.extend(events.iter().cloned());
        events
    }

    pub fn create_checkout_session(
        &mut self,
        params: &Params,
        checkout_base: &str,
    ) -> Result<Value, SimError> {
        if params.get("mode") != Some("payment") {
            return Err(SimError::invalid(
                "The simulator supports mode=payment only.",
                Some("mode"),
            ));
        }
        let success_url = params.get("success_url").ok_or_else(|| {
            SimError::invalid("Missing required param: success_url.", Some("success_url"))
        })?;
        let currency = params
            .get("line_items[0][price_data][currency]")
            .ok_or_else(|| {
                SimError::invalid(
                    "Missing required param: line_items[0][price_data][currency].",
                    Some("line_items"),
                )
            })?
            .to_string();
        let unit = params
            .int("line_items[0][price_data][unit_amount]")?
            .ok_or_else(|| {
                SimError::invalid(
                    "Missing required param: line_items[0][price_data][unit_amount].",
                    Some("line_items"),
                )
            })?;
        let quantity = params.int("line_items[0][quantity]")?.unwrap_or(1);
        let amount = unit * quantity;
        let capture_method = params
            .get("payment_intent_data[capture_method]")
            .unwrap_or("automatic")
            .to_string();
        let created = now();
        let expires_at = checkout_expiry(params, created)?;
        let session_id = new_id("cs_test");
        let intent_id = new_id("pi");
        let intent = json!({
            "id": intent_id,
            "object": "payment_intent",
            "amount": amount,
            "amount_capturable": 0,
            "amount_received": 0,
            "capture_method": capture_method,
            "canceled_at": null,
            "cancellation_reason": null,
            "client_secret": format!("{intent_id}_secret_{}", new_id("x")),
            "confirmation_method": "automatic",
            "created": created,
            "currency": currency,
            "customer": null,
            "description": null,
            "last_payment_error": null,
            "latest_charge": null,
            "livemode": false,
            "metadata": params.map("payment_intent_data[metadata]"),
            "payment_method": null,
            "payment_method_types": ["card"],
            "receipt_email": params.get("customer_email"),
            "status": "requires_payment_method",
        });
        let session = json!({
            "id": session_id,
            "object": "checkout.session",
            "amount_subtotal": amount,
            "amount_total": amount,
            "cancel_url": params.get("cancel_url"),
            "client_reference_id": params.get("client_reference_id"),
            "created": created,
            "currency": currency,
            "customer": null,
            "customer_details": null,
            "customer_email": params.get("customer_email"),
            "expires_at": expires_at,
            "livemode": false,
            "metadata": params.map("metadata"),
            "mode": "payment",
            "payment_intent": intent_id,
            "payment_method_types": ["card"],
            "payment_status": "unpaid",
            "status": "open",
            "success_url": success_url,
            "url": format!("{checkout_base}/checkout/{session_id}"),
        });
        self.intents.insert(intent_id, intent);
        self.sessions.insert(session_id, session.clone());
        Ok(session)
    }

    /// `POST /v1/checkout/sessions/{id}/expire`, or the session's `expires_at` passing:
    /// an open session can no longer be paid, and `checkout.session.expired` fires.
    pub fn expire_session(
        &mut self,
        session_id: &str,
        origin: &Origin,
    ) -> Result<(Value, Vec<Value>), SimError> {
        let session = self
            .sessions
            .get_mut(session_id)
            .ok_or_else(|| SimError::missing("checkout.session", session_id))?;
        if session["status"] != "open" {
            return Err(SimError::invalid(
                format!(
                    "Only Checkout Sessions with a status in [\"open\"] can be expired. This Checkout Session has a status of \"{}\".",
                    session["status"].as_str().unwrap_or_default()
                ),
                None,
            ));
        }
        session["status"] = json!("expired");
        session["url"] = Value::Null;
        let session = session.clone();
        let events = self.record_events(vec![event("checkout.session.expired", &session, origin)]);
        Ok((session, events))
    }

    /// Expires every open session whose `expires_at` is at or before `now` (Unix
    /// seconds); returns the events.
    pub fn expire_due(&mut self, now: i64) -> Vec<Value> {
        let due: Vec<String> = self
            .sessions
            .values()
            .filter(|session| session["status"] == "open")
            .filter(|session| session["expires_at"].as_i64().is_some_and(|at| at <= now))
            .filter_map(|session| session["id"].as_str().map(str::to_string))
            .collect();
        due.iter()
            .filter_map(|id| self.expire_session(id, &Origin::default()).ok())
            .flat_map(|(_, events)| events)
            .collect()
    }

    /// The guest enters a promotion code on the checkout page (`allow_promotion_codes`):
    /// the session's `amount_total` and its PaymentIntent's `amount` drop by `amount_off`,
    /// so Stripe collects less than the price the ledger locked.
    pub fn apply_discount(&mut self, session_id: &str, amount_off: i64) -> Result<(), SimError> {
        let session = self
            .sessions
            .get_mut(session_id)
            .ok_or_else(|| SimError::missing("checkout.session", session_id))?;
        let total = session["amount_total"].as_i64().unwrap_or(0);
        if amount_off <= 0 || amount_off >= total {
            return Err(SimError::invalid(
                format!("A discount of {amount_off} does not fit a total of {total}."),
                Some("discounts"),
            ));
        }
        session["amount_total"] = json!(total - amount_off);
        let intent_id = session["payment_intent"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if let Some(intent) = self.intents.get_mut(&intent_id) {
            intent["amount"] = json!(total - amount_off);
        }
        Ok(())
    }

    /// A guest pays a session with a test card; returns (payment intent, events).
    pub fn pay(
        &mut self,
        session_id: &str,
        card: &str,
        email: Option<&str>,
        manual_capture_payment_status: &str,
    ) -> Result<(Value, Vec<Value>), SimError> {
        let session = self
            .sessions
            .get(session_id)
            .cloned()
            .ok_or_else(|| SimError::missing("checkout.session", session_id))?;
        if session["status"] != "open" {
            return Err(SimError::invalid(
                "This Checkout Session is no longer open.",
                None,
            ));
        }
        let outcome = card_outcome(card).ok_or(SimError {
            status: 402,
            kind: "card_error",
            code: Some("incorrect_number"),
            decline_code: None,
            message: "Your card number is incorrect.".to_string(),
            param: Some("number".to_string()),
        })?;
        let intent_id = session["payment_intent"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut intent = self
            .intents
            .get(&intent_id)
            .cloned()
            .ok_or_else(|| SimError::missing("payment_intent", &intent_id))?;
        let email = email
            .map(str::to_string)
            .or_else(|| session["customer_email"].as_str().map(str::to_string));
        let amount = intent["amount"].as_i64().unwrap_or(0);
        let manual = intent["capture_method"] == "manual";
        let origin = Origin::default();
        let charge_id = new_id("ch");
        let payment_method = new_id("pm");
        intent["payment_method"] = json!(payment_method);
        let mut events = Vec::new();
        match outcome {
            CardOutcome::Succeeds => {
                let charge = json!({
                    "id": charge_id,
                    "object": "charge",
                    "amount": amount,
                    "amount_captured": if manual { 0 } else { amount },
                    "amount_refunded": 0,
                    "billing_details": { "email": email },
                    "captured": !manual,
                    "created": now(),
                    "currency": intent["currency"],
                    "disputed": false,
                    "livemode": false,
                    "metadata": intent["metadata"],
                    "paid": true,
                    "payment_intent": intent_id,
                    "payment_method": payment_method,
                    "receipt_email": email,
                    "refunded": false,
                    "status": "succeeded",
                });
                intent["latest_charge"] = json!(charge_id);
                intent["last_payment_error"] = Value::Null;
                if manual {
                    intent["status"] = json!("requires_capture");
                    intent["amount_capturable"] = json!(amount);
                } else {
                    intent["status"] = json!("succeeded");
                    intent["amount_received"] = json!(amount);
                }
                let mut completed = session.clone();
                completed["status"] = json!("complete");
                // An authorisation is not revenue; what Checkout reports for it is
                // configurable (see `StripeSimConfig`).
                completed["payment_status"] = json!(if manual {
                    manual_capture_payment_status
                } else {
                    "paid"
                });
                completed["url"] = Value::Null;
                completed["customer_details"] = json!({ "email": email });
                events.push(event("charge.succeeded", &charge, &origin));
                events.push(event(
                    if manual {
                        "payment_intent.amount_capturable_updated"
                    } else {
                        "payment_intent.succeeded"
                    },
                    &intent,
                    &origin,
                ));
                events.push(event("checkout.session.completed", &completed, &origin));
                self.charges.insert(charge_id, charge);
                self.sessions.insert(session_id.to_string(), completed);
            }
            CardOutcome::Declined {
                decline_code,
                message,
            } => {
                let charge = json!({
                    "id": charge_id,
                    "object": "charge",
                    "amount": amount,
                    "amount_captured": 0,
                    "amount_refunded": 0,
                    "captured": false,
                    "created": now(),
                    "currency": intent["currency"],
                    "failure_code": "card_declined",
                    "failure_message": message,
                    "livemode": false,
                    "metadata": intent["metadata"],
                    "outcome": { "type": "issuer_declined", "reason": decline_code },
                    "paid": false,
                    "payment_intent": intent_id,
                    "refunded": false,
                    "status": "failed",
                });
                intent["status"] = json!("requires_payment_method");
                intent["latest_charge"] = json!(charge_id);
                intent["last_payment_error"] = json!({
                    "type": "card_error",
                    "code": "card_declined",
                    "decline_code": decline_code,
                    "message": message,
                    "charge": charge_id,
                    "doc_url": "https://stripe.com/docs/error-codes/card-declined",
                    "payment_method": { "id": payment_method, "object": "payment_method", "type": "card" },
                });
                events.push(event("charge.failed", &charge, &origin));
                events.push(event("payment_intent.payment_failed", &intent, &origin));
                self.charges.insert(charge_id, charge);
            }
            CardOutcome::RequiresAuthentication => {
                intent["status"] = json!("requires_action");
                intent["next_action"] = json!({ "type": "use_stripe_sdk" });
                events.push(event("payment_intent.requires_action", &intent, &origin));
            }
        }
        self.intents.insert(intent_id, intent.clone());
        Ok((intent, self.record_events(events)))
    }

    pub fn capture(
        &mut self,
        intent_id: &str,
        params: &Params,
        origin: &Origin,
    ) -> Result<(Value, Vec<Value>), SimError> {
        let mut intent = self
            .intents
            .get(intent_id)
            .cloned()
            .ok_or_else(|| SimError::missing("payment_intent", intent_id))?;
        if intent["status"] != "requires_capture" {
            return Err(SimError {
                code: Some("payment_intent_unexpected_state"),
                ..SimError::invalid(
                    format!(
                        "This PaymentIntent could not be captured because it has a status of {}. Only a PaymentIntent with one of the following statuses may be captured: requires_capture.",
                        intent["status"].as_str().unwrap_or("unknown")
                    ),
                    None,
                )
            });
        }
        if let Some(decline_code) = self.capture_declines.remove(intent_id) {
            // The issuer refused the capture: Stripe answers a card error and the
            // PaymentIntent keeps its authorization (still `requires_capture`).
            intent["last_payment_error"] = json!({
                "type": "card_error",
                "code": "card_declined",
                "decline_code": decline_code,
                "message": "Your card was declined.",
                "doc_url": "https://stripe.com/docs/error-codes/card-declined",
            });
            self.intents.insert(intent_id.to_string(), intent);
            return Err(SimError {
                status: 402,
                kind: "card_error",
                code: Some("card_declined"),
                decline_code: Some(decline_code),
                message: "Your card was declined.".to_string(),
                param: None,
            });
        }
        let capturable = intent["amount_capturable"].as_i64().unwrap_or(0);
        let amount = params.int("amount_to_capture")?.unwrap_or(capturable);
        if amount <= 0 || amount > capturable {
            return Err(SimError::invalid(
                format!("The amount to capture ({amount}) must be positive and at most the amount capturable ({capturable})."),
                Some("amount_to_capture"),
            ));
        }
        intent["status"] = json!("succeeded");
        intent["amount_received"] = json!(amount);
        intent["amount_capturable"] = json!(0);
        let mut events = Vec::new();
        if let Some(charge_id) = intent["latest_charge"].as_str().map(str::to_string) {
            if let Some(charge) = self.charges.get_mut(&charge_id) {
                charge["captured"] = json!(true);
                charge["amount_captured"] = json!(amount);
                events.push(event("charge.captured", charge, origin));
            }
        }
        events.push(event("payment_intent.succeeded", &intent, origin));
        self.intents.insert(intent_id.to_string(), intent.clone());
        Ok((intent, self.record_events(events)))
    }

    pub fn cancel(
        &mut self,
        intent_id: &str,
        params: &Params,
        origin: &Origin,
    ) -> Result<(Value, Vec<Value>), SimError> {
        let mut intent = self
            .intents
            .get(intent_id)
            .cloned()
            .ok_or_else(|| SimError::missing("payment_intent", intent_id))?;
        let status = intent["status"].as_str().unwrap_or_default().to_string();
        let cancellable = [
            "requires_payment_method",
            "requires_capture",
            "requires_confirmation",
            "requires_action",
        ];
        if !cancellable.contains(&status.as_str()) {
            return Err(SimError {
                code: Some("payment_intent_unexpected_state"),
                ..SimError::invalid(
                    format!("You cannot cancel this PaymentIntent because it has a status of {status}. Only a PaymentIntent with one of the following statuses may be canceled: requires_payment_method, requires_capture, requires_confirmation, requires_action, processing."),
                    None,
                )
            });
        }
        intent["status"] = json!("canceled");
        intent["canceled_at"] = json!(now());
        intent["cancellation_reason"] = json!(params.get("cancellation_reason"));
        intent["amount_capturable"] = json!(0);
        let events = vec![event("payment_intent.canceled", &intent, origin)];
        self.intents.insert(intent_id.to_string(), intent.clone());
        Ok((intent, self.record_events(events)))
    }

    pub fn refund(
        &mut self,
        params: &Params,
        origin: &Origin,
    ) -> Result<(Value, Vec<Value>), SimError> {
        let intent_id = params.get("payment_intent").ok_or_else(|| {
            SimError::invalid(
                "One of the following params should be provided for this request: payment_intent or charge.",
                None,
            )
        })?;
        let intent = self
            .intents
            .get(intent_id)
            .ok_or_else(|| SimError::missing("payment_intent", intent_id))?;
        let charge_id = intent["latest_charge"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let charge = self
            .charges
            .get_mut(&charge_id)
            .filter(|charge| charge["captured"] == true)
            .ok_or_else(|| {
                SimError::invalid(
                    format!("This PaymentIntent ({intent_id}) does not have a successful charge to refund."),
                    Some("payment_intent"),
                )
            })?;
        let captured = charge["amount_captured"].as_i64().unwrap_or(0);
        let refunded = charge["amount_refunded"].as_i64().unwrap_or(0);
        let amount = params.int("amount")?.unwrap_or(captured - refunded);
        if amount <= 0 || refunded + amount > captured {
            return Err(SimError {
                code: Some("charge_already_refunded"),
                ..SimError::invalid(
                    format!("Refund amount ({amount}) is greater than unrefunded amount on charge ({}).", captured - refunded),
                    Some("amount"),
                )
            });
        }
        charge["amount_refunded"] = json!(refunded + amount);
        charge["refunded"] = json!(refunded + amount == captured);
        let refund = json!({
            "id": new_id("re"),
            "object": "refund",
            "amount": amount,
            "charge": charge_id,
            "created": now(),
            "currency": charge["currency"],
            "metadata": params.map("metadata"),
            "payment_intent": intent_id,
            "reason": params.get("reason"),
            "status": "succeeded",
        });
        let events = vec![
            event("charge.refunded", charge, origin),
            event("refund.created", &refund, origin),
        ];
        if let Some(id) = refund["id"].as_str() {
            self.refunds.insert(id.to_string(), refund.clone());
        }
        Ok((refund, self.record_events(events)))
    }

    /// Makes the issuer decline the next capture of `intent_id` (Stripe has no test card
    /// for a decline at capture; the answer is the card error Stripe gives for declines).
    pub fn decline_next_capture(&mut self, intent_id: &str) -> Result<(), SimError> {
        if !self.intents.contains_key(intent_id) {
            return Err(SimError::missing("payment_intent", intent_id));
        }
        self.capture_declines
            .insert(intent_id.to_string(), "generic_decline");
        Ok(())
    }

    /// A refund that fails after it was reported, as with test card 4000 0000 0000 5126:
    /// the refund becomes `failed`, the money goes back to the charge (its
    /// `amount_refunded` goes down) and `refund.failed` fires.
    pub fn fail_refund(
        &mut self,
        refund_id: &str,
        origin: &Origin,
    ) -> Result<(Value, Vec<Value>), SimError> {
        let mut refund = self
            .refunds
            .get(refund_id)
            .cloned()
            .ok_or_else(|| SimError::missing("refund", refund_id))?;
        if refund["status"] == "failed" || refund["status"] == "canceled" {
            return Err(SimError::invalid(
                format!(
                    "Refund {refund_id} has already {}.",
                    refund["status"].as_str().unwrap_or("ended")
                ),
                None,
            ));
        }
        let amount = refund["amount"].as_i64().unwrap_or(0);
        if let Some(charge) = refund["charge"]
            .as_str()
            .and_then(|charge_id| self.charges.get_mut(charge_id))
        {
            let refunded = charge["amount_refunded"].as_i64().unwrap_or(0);
            charge["amount_refunded"] = json!((refunded - amount).max(0));
            charge["refunded"] = json!(false);
        }
        refund["status"] = json!("failed");
        refund["failure_reason"] = json!("expired_or_canceled_card");
        self.refunds.insert(refund_id.to_string(), refund.clone());
        let events = vec![event("refund.failed", &refund, origin)];
        Ok((refund, self.record_events(events)))
    }

    /// The guest's bank disputes the payment's charge, as test card 4000 0000 0000 0259
    /// does: `charge.dispute.created`, then (card disputes take the money at once)
    /// `charge.dispute.funds_withdrawn`.
    pub fn create_dispute(
        &mut self,
        intent_id: &str,
        origin: &Origin,
    ) -> Result<(Value, Vec<Value>), SimError> {
        let intent = self
            .intents
            .get(intent_id)
            .ok_or_else(|| SimError::missing("payment_intent", intent_id))?;
        let charge_id = intent["latest_charge"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let charge = self
            .charges
            .get_mut(&charge_id)
            .filter(|charge| charge["captured"] == true)
            .ok_or_else(|| {
                SimError::invalid(
                    format!("PaymentIntent {intent_id} has no captured charge to dispute."),
                    None,
                )
            })?;
        charge["disputed"] = json!(true);
        let dispute = json!({
            "id": new_id("dp"),
            "object": "dispute",
            "amount": charge["amount_captured"],
            "balance_transactions": [],
            "charge": charge_id,
            "created": now(),
            "currency": charge["currency"],
            "is_charge_refundable": false,
            "livemode": false,
            "metadata": {},
            "payment_intent": intent_id,
            "reason": "fraudulent",
            "status": "needs_response",
        });
        let events = vec![
            event("charge.dispute.created", &dispute, origin),
            event("charge.dispute.funds_withdrawn", &dispute, origin),
        ];
        if let Some(id) = dispute["id"].as_str() {
            self.disputes.insert(id.to_string(), dispute.clone());
        }
        Ok((dispute, self.record_events(events)))
    }

    /// The bank decides: `won` gives the money back (`charge.dispute.funds_reinstated`,
    /// then `charge.dispute.closed`), `lost` keeps it (`charge.dispute.closed`).
    pub fn close_dispute(
        &mut self,
        dispute_id: &str,
        status: &str,
        origin: &Origin,
    ) -> Result<(Value, Vec<Value>), SimError> {
        let mut dispute = self
            .disputes
            .get(dispute_id)
            .cloned()
            .ok_or_else(|| SimError::missing("dispute", dispute_id))?;
        if !matches!(status, "won" | "lost") {
            return Err(SimError::invalid(
                format!("A dispute closes won or lost, not {status:?}."),
                Some("status"),
            ));
        }
        if matches!(dispute["status"].as_str(), Some("won" | "lost")) {
            return Err(SimError::invalid(
                format!("Dispute {dispute_id} is already closed."),
                None,
            ));
        }
        dispute["status"] = json!(status);
        self.disputes
            .insert(dispute_id.to_string(), dispute.clone());
        let mut events = Vec::new();
        if status == "won" {
            events.push(event("charge.dispute.funds_reinstated", &dispute, origin));
        }
        events.push(event("charge.dispute.closed", &dispute, origin));
        Ok((dispute, self.record_events(events)))
    }

    /// `GET /v1/events`: newest first, with Stripe's filters and cursors.
    pub fn list_events(&self, params: &Params) -> Result<Value, SimError> {
        let limit = params.int("limit")?.unwrap_or(10).clamp(1, 100) as usize;
        let bound = |key: &str| params.int(&format!("created[{key}]"));
        let (gt, gte, lt, lte) = (bound("gt")?, bound("gte")?, bound("lt")?, bound("lte")?);
        let exact = params.int("created")?;
        let types: Vec<&str> = params
            .0
            .iter()
            .filter(|(k, _)| k.starts_with("types["))
            .map(|(_, v)| v.as_str())
            .chain(params.get("type"))
            .collect();
        let mut newest_first: Vec<&Value> = self
            .events
            .iter()
            .rev()
            .filter(|event| {
                let created = event["created"].as_i64().unwrap_or(0);
                let kind = event["type"].as_str().unwrap_or_default();
                gt.is_none_or(|v| created > v)
                    && gte.is_none_or(|v| created >= v)
                    && lt.is_none_or(|v| created < v)
                    && lte.is_none_or(|v| created <= v)
                    && exact.is_none_or(|v| created == v)
                    && (types.is_empty() || types.iter().any(|t| type_matches(t, kind)))
            })
            .collect();
        if let Some(after) = params.get("starting_after") {
            let position = newest_first
                .iter()
                .position(|event| event["id"] == after)
                .ok_or_else(|| SimError::missing("event", after))?;
            newest_first.drain(..=position);
        } else if let Some(before) = params.get("ending_before") {
            let position = newest_first
                .iter()
                .position(|event| event["id"] == before)
                .ok_or_else(|| SimError::missing("event", before))?;
            newest_first.truncate(position);
            // The page just newer than the cursor; `has_more`: still newer ones beyond it.
            let skip = newest_first.len().saturating_sub(limit);
            newest_first.drain(..skip);
            return Ok(json!({
                "object": "list",
                "data": newest_first,
                "has_more": skip > 0,
                "url": "/v1/events",
            }));
        }
        let has_more = newest_first.len() > limit;
        newest_first.truncate(limit);
        Ok(json!({
            "object": "list",
            "data": newest_first,
            "has_more": has_more,
            "url": "/v1/events",
        }))
    }
}

/// `payment_intent.*` style wildcards, as the Events API accepts them.
fn type_matches(pattern: &str, kind: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => kind.starts_with(prefix),
        None => pattern == kind,
    }
}

/// A session's `expires_at`: as asked, within Stripe's 30 minutes to 24 hours after
/// creation, else 24 hours (Stripe's default).
fn checkout_expiry(params: &Params, created: i64) -> Result<i64, SimError> {
    const MIN_SECONDS: i64 = 30 * 60;
    const MAX_SECONDS: i64 = 24 * 60 * 60;
    match params.int("expires_at")? {
        None => Ok(created + MAX_SECONDS),
        Some(at) if (created + MIN_SECONDS..=created + MAX_SECONDS).contains(&at) => Ok(at),
        Some(_) => Err(SimError::invalid(
            "The `expires_at` timestamp must be between 30 minutes and 24 hours from Checkout Session creation.",
            Some("expires_at"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session_params(extra: &str) -> Params {
        Params::parse(&format!(
            "mode=payment&success_url=http://x/ok&line_items[0][price_data][currency]=eur&line_items[0][price_data][unit_amount]=1500{extra}"
        ))
    }

    #[test]
    fn a_session_expires_at_its_expires_at_and_not_before() {
        let mut state = SimState::default();
        let at = now() + 40 * 60;
        let session = state
            .create_checkout_session(&session_params(&format!("&expires_at={at}")), "http://sim")
            .unwrap();
        assert_eq!(session["expires_at"], at);
        assert!(state.expire_due(at - 1).is_empty());
        let events = state.expire_due(at);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["type"], "checkout.session.expired");
        assert_eq!(events[0]["data"]["object"]["status"], "expired");
        assert!(state.expire_due(at + 60).is_empty(), "once");
        let id = session["id"].as_str().unwrap();
        assert!(state.pay(id, "4242424242424242", None, "unpaid").is_err());
    }

    #[test]
    fn expires_at_outside_stripes_bounds_is_refused() {
        let mut state = SimState::default();
        for minutes in [10, 25 * 60] {
            let at = now() + minutes * 60;
            let error = state
                .create_checkout_session(
                    &session_params(&format!("&expires_at={at}")),
                    "http://sim",
                )
                .unwrap_err();
            assert_eq!(error.param.as_deref(), Some("expires_at"));
        }
        let session = state
            .create_checkout_session(&session_params(""), "http://sim")
            .unwrap();
        assert_eq!(
            session["expires_at"],
            session["created"].as_i64().unwrap() + 86_400
        );
    }

    #[test]
    fn bracket_params_parse() {
        let params = Params::parse("metadata%5Ba%5D=1&metadata[b]=2&mode=payment&x[y][z]=3");
        assert_eq!(params.get("mode"), Some("payment"));
        let map = params.map("metadata");
        assert_eq!(map.len(), 2);
        assert_eq!(map["a"], "1");
    }

    #[test]
    fn test_cards_map_to_outcomes() {
        assert_eq!(
            card_outcome("4242 4242 4242 4242"),
            Some(CardOutcome::Succeeds)
        );
        assert!(matches!(
            card_outcome("4000000000009995"),
            Some(CardOutcome::Declined {
                decline_code: "insufficient_funds",
                ..
            })
        ));
        assert_eq!(card_outcome("1234"), None);
    }
}
