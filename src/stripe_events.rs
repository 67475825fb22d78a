//! Translating a Stripe event (as stored in the webhook inbox) into a Payment command.
//!
//! Pure: it reads the event's JSON and decides which payment it concerns and what fact it
//! reports; the caller finds the payment and executes the command. The JSON is read
//! tolerantly with `serde_json::Value` so that newer API versions with extra fields, or an
//! event type we do not know, never fail a delivery (see the Stripe reference, §9).
//!
//! Stripe's amounts are taken as Stripe reports them — `amount_received` for a success
//! (less than the price after a partial capture), the charge's cumulative
//! `amount_refunded` for refunds — never computed from deltas here.

use chrono::{DateTime, TimeZone, Utc};
use latchkey_aggregates::payment::refunds::refund_request_of_key;
use latchkey_aggregates::payment::{DisputeUpdate, PaymentCommand, RefundStatus, StripeEventRef};
use latchkey_aggregates::{Actor, Currency, Money};
use serde_json::Value;
use uuid::Uuid;

/// Metadata key holding our payment id on Checkout Sessions, PaymentIntents and refunds.
pub const PAYMENT_ID_METADATA: &str = "latchkey_payment_id";

/// Every Stripe event type [`translate`] turns into a payment fact: what the catch-up job
/// lists (webhook endpoints should send these too).
pub const USED_EVENT_TYPES: &[&str] = &[
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
    "payment_intent.succeeded",
    "payment_intent.amount_capturable_updated",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
    "charge.refunded",
    "refund.created",
    "refund.updated",
    "refund.failed",
    "charge.dispute.created",
    "charge.dispute.funds_withdrawn",
    "charge.dispute.funds_reinstated",
    "charge.dispute.closed",
];

/// Metadata key holding our refund request id on the refunds we create.
pub const REFUND_REQUEST_METADATA: &str = "latchkey_refund_request_id";

/// How to find the payment a Stripe event is about, best first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaymentReference {
    PaymentId(Uuid),
    CheckoutSession(String),
    PaymentIntent(String),
    Charge(String),
}

/// What to do with one Stripe event.
// One lives per event being processed, briefly; boxing the command buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Translation {
    /// Execute `command` on the payment found through the first matching reference.
    Apply {
        references: Vec<PaymentReference>,
        command: PaymentCommand,
    },
    /// Nothing to do, for this reason (kept on the inbox row).
    Ignore { reason: String },
}

/// A Stripe event we cannot read the fields we need from.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("Stripe event {event_id}: {problem}")]
pub struct TranslateError {
    pub event_id: String,
    pub problem: String,
}

/// Decides what a Stripe event means for the ledger. `at` is the time of processing.
pub fn translate(event: &Value, at: DateTime<Utc>) -> Result<Translation, TranslateError> {
    let reader = EventReader::new(event)?;
    let object = reader.object();
    let stripe_event = reader.stripe_ref();
    let actor = Actor::Stripe;
    let command = match reader.event_type {
        "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
            if object.get("payment_status").and_then(Value::as_str) == Some("unpaid") {
                return Ok(Translation::Ignore {
                    reason: "checkout completed with payment_status unpaid: nothing is paid until \
                             checkout.session.async_payment_succeeded (or, for manual capture, \
                             payment_intent.amount_capturable_updated)"
                        .to_string(),
                });
            }
            PaymentCommand::ConfirmPayment {
                payment_intent_id: reader.string(object, "payment_intent")?,
                charge_id: None,
                amount_received: reader.money(object, "amount_total")?,
                stripe_event,
                actor,
                at,
            }
        }
        "checkout.session.async_payment_failed" => PaymentCommand::RecordFailure {
            payment_intent_id: reader.string(object, "payment_intent")?,
            reason: "the delayed payment method failed".to_string(),
            stripe_event,
            actor,
            at,
        },
        "checkout.session.expired" => PaymentCommand::RecordCheckoutExpired {
            checkout_session_id: reader.string(object, "id")?,
            stripe_event,
            actor,
            at,
        },
        "payment_intent.succeeded" => PaymentCommand::ConfirmPayment {
            payment_intent_id: reader.string(object, "id")?,
            charge_id: optional_string(object, "latest_charge"),
            amount_received: reader.money(object, "amount_received")?,
            stripe_event,
            actor,
            at,
        },
        "payment_intent.amount_capturable_updated" => PaymentCommand::RecordAuthorization {
            payment_intent_id: reader.string(object, "id")?,
            amount_capturable: reader.money(object, "amount_capturable")?,
            stripe_event,
            actor,
            at,
        },
        "payment_intent.payment_failed" => PaymentCommand::RecordFailure {
            payment_intent_id: reader.string(object, "id")?,
            reason: failure_reason(object),
            stripe_event,
            actor,
            at,
        },
        "payment_intent.canceled" => PaymentCommand::RecordCancellation {
            payment_intent_id: reader.string(object, "id")?,
            cancellation_reason: optional_string(object, "cancellation_reason"),
            stripe_event,
            actor,
            at,
        },
        "charge.refunded" => PaymentCommand::RecordRefund {
            payment_intent_id: optional_string(object, "payment_intent"),
            charge_id: reader.string(object, "id")?,
            amount_refunded: reader.money(object, "amount_refunded")?,
            refund_request_id: reader.our_refund_request(),
            stripe_event,
            actor,
            at,
        },
        "refund.created" | "refund.updated" | "refund.failed" => {
            let status = reader.string(object, "status")?;
            let Some(refund_status) = RefundStatus::parse(&status) else {
                return Ok(Translation::Ignore {
                    reason: format!("refund status {status} is not known to Latchkey"),
                });
            };
            PaymentCommand::RecordRefundUpdate {
                refund_id: reader.string(object, "id")?,
                charge_id: reader.string(object, "charge")?,
                payment_intent_id: optional_string(object, "payment_intent"),
                amount: reader.money(object, "amount")?,
                refund_status,
                refund_created: reader.time(object, "created")?,
                refund_request_id: object
                    .get("metadata")
                    .and_then(|metadata| metadata.get(REFUND_REQUEST_METADATA))
                    .and_then(Value::as_str)
                    .and_then(|id| Uuid::parse_str(id).ok()),
                failure_reason: optional_string(object, "failure_reason"),
                stripe_event,
                actor,
                at,
            }
        }
        "charge.dispute.created" => PaymentCommand::RecordDispute {
            dispute_id: reader.string(object, "id")?,
            amount: reader.money(object, "amount")?,
            reason: optional_string(object, "reason").unwrap_or_else(|| "unknown".to_string()),
            stripe_event,
            actor,
            at,
        },
        "charge.dispute.funds_withdrawn"
        | "charge.dispute.funds_reinstated"
        | "charge.dispute.closed" => PaymentCommand::RecordDisputeUpdate {
            dispute_id: reader.string(object, "id")?,
            amount: reader.money(object, "amount")?,
            update: match reader.event_type {
                "charge.dispute.funds_withdrawn" => DisputeUpdate::FundsWithdrawn,
                "charge.dispute.funds_reinstated" => DisputeUpdate::FundsReinstated,
                _ => DisputeUpdate::Closed {
                    status: reader.string(object, "status")?,
                },
            },
            stripe_event,
            actor,
            at,
        },
        other => {
            return Ok(Translation::Ignore {
                reason: format!("event type {other} is not used by Latchkey"),
            })
        }
    };
    Ok(Translation::Apply {
        references: references(reader.event_type, object),
        command,
    })
}

/// The references of the object an event carries, best first: our own id in metadata,
/// then the Stripe ids we stored when we created the checkout.
fn references(event_type: &str, object: &Value) -> Vec<PaymentReference> {
    let mut references = Vec::new();
    if let Some(id) = object
        .get("metadata")
        .and_then(|metadata| metadata.get(PAYMENT_ID_METADATA))
        .and_then(Value::as_str)
        .and_then(|id| Uuid::parse_str(id).ok())
    {
        references.push(PaymentReference::PaymentId(id));
    }
    let id = optional_string(object, "id");
    if event_type.starts_with("checkout.session.") {
        references.extend(id.map(PaymentReference::CheckoutSession));
        references
            .extend(optional_string(object, "payment_intent").map(PaymentReference::PaymentIntent));
    } else if event_type.starts_with("payment_intent.") {
        references.extend(id.map(PaymentReference::PaymentIntent));
    } else if event_type.starts_with("charge.dispute.") || event_type.starts_with("refund.") {
        // Disputes and refunds name the PaymentIntent and the charge they belong to.
        references
            .extend(optional_string(object, "payment_intent").map(PaymentReference::PaymentIntent));
        references.extend(optional_string(object, "charge").map(PaymentReference::Charge));
    } else if event_type.starts_with("charge.") {
        references
            .extend(optional_string(object, "payment_intent").map(PaymentReference::PaymentIntent));
        references.extend(id.map(PaymentReference::Charge));
    }
    references
}

/// `card_declined (insufficient_funds): Your card has insufficient funds.`
fn failure_reason(object: &Value) -> String {
    let Some(error) = object.get("last_payment_error").filter(|e| e.is_object()) else {
        return "the payment failed (Stripe gave no reason)".to_string();
    };
    let code = optional_string(error, "code").unwrap_or_else(|| "payment_failed".to_string());
    let decline = optional_string(error, "decline_code")
        .map(|decline| format!(" ({decline})"))
        .unwrap_or_default();
    let message = optional_string(error, "message")
        .map(|message| format!(": {message}"))
        .unwrap_or_default();
    format!("{code}{decline}{message}")
}

fn optional_string(object: &Value, field: &str) -> Option<String> {
    object
        .get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

struct EventReader<'a> {
    event: &'a Value,
    event_id: &'a str,
    event_type: &'a str,
}

impl<'a> EventReader<'a> {
    fn new(event: &'a Value) -> Result<Self, TranslateError> {
        let event_id = event.get("id").and_then(Value::as_str).unwrap_or("(no id)");
        let fail = |problem: &str| TranslateError {
            event_id: event_id.to_string(),
            problem: problem.to_string(),
        };
        let event_type = event
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| fail("has no type"))?;
        if !event
            .get("data")
            .and_then(|d| d.get("object"))
            .is_some_and(Value::is_object)
        {
            return Err(fail("has no data.object"));
        }
        Ok(EventReader {
            event,
            event_id,
            event_type,
        })
    }

    fn object(&self) -> &'a Value {
        &self.event["data"]["object"]
    }

    fn stripe_ref(&self) -> StripeEventRef {
        let created = self
            .event
            .get("created")
            .and_then(Value::as_i64)
            .and_then(|seconds| Utc.timestamp_opt(seconds, 0).single())
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        StripeEventRef {
            id: self.event_id.to_string(),
            created,
        }
    }

    /// Our refund request behind the event: Stripe echoes the request's idempotency key.
    fn our_refund_request(&self) -> Option<Uuid> {
        self.event
            .get("request")
            .and_then(|request| request.get("idempotency_key"))
            .and_then(Value::as_str)
            .and_then(refund_request_of_key)
    }

    fn time(&self, object: &Value, field: &str) -> Result<DateTime<Utc>, TranslateError> {
        object
            .get(field)
            .and_then(Value::as_i64)
            .and_then(|seconds| Utc.timestamp_opt(seconds, 0).single())
            .ok_or_else(|| self.problem(format!("{} has no unix time {field}", self.event_type)))
    }

    fn problem(&self, problem: String) -> TranslateError {
        TranslateError {
            event_id: self.event_id.to_string(),
            problem,
        }
    }

    fn string(&self, object: &Value, field: &str) -> Result<String, TranslateError> {
        optional_string(object, field)
            .ok_or_else(|| self.problem(format!("{} has no {field}", self.event_type)))
    }

    fn money(&self, object: &Value, field: &str) -> Result<Money, TranslateError> {
        let amount = object
            .get(field)
            .and_then(Value::as_i64)
            .ok_or_else(|| self.problem(format!("{} has no integer {field}", self.event_type)))?;
        let currency = object
            .get("currency")
            .and_then(Value::as_str)
            .and_then(|code| Currency::parse(&code.to_ascii_lowercase()).ok())
            .ok_or_else(|| self.problem(format!("{} has no valid currency", self.event_type)))?;
        Ok(Money::new(amount, currency))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(kind: &str, object: Value) -> Value {
        json!({"id": "evt_1", "object": "event", "type": kind, "created": 1_700_000_000, "data": {"object": object}})
    }

    fn now() -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_100, 0).single().unwrap()
    }

    const PAYMENT: &str = "6f1c1f7e-6d1f-4b4e-9d0e-3c2b1a0f9e8d";

    /// The README's production set-up tells operators which types to send the webhook
    /// endpoint; a type missing there is never delivered, one missing here is never
    /// caught up. Every type `translate` applies is in the list (dispute updates too).
    #[test]
    fn the_readme_lists_exactly_the_used_event_types() {
        let readme = include_str!("../README.md");
        let start = readme
            .find("**Stripe.** In the Stripe dashboard")
            .expect("the README's Stripe production paragraph");
        let end = start
            + readme[start..]
                .find("The catch-up job lists")
                .expect("its end");
        let mut listed: Vec<&str> = readme[start..end]
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|name| {
                name.contains('.')
                    && name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.')
            })
            .collect();
        listed.sort_unstable();
        let mut used = USED_EVENT_TYPES.to_vec();
        used.sort_unstable();
        assert_eq!(listed, used);
        for kind in [
            "charge.dispute.funds_withdrawn",
            "charge.dispute.funds_reinstated",
            "charge.dispute.closed",
        ] {
            assert!(USED_EVENT_TYPES.contains(&kind), "{kind}");
        }
    }

    #[test]
    fn every_used_event_type_is_translated_and_no_other() {
        let not_used = |translation: Result<Translation, TranslateError>| matches!(translation, Ok(Translation::Ignore { reason }) if reason.contains("not used"));
        for kind in USED_EVENT_TYPES {
            assert!(
                !not_used(translate(&event(kind, json!({"id": "x"})), now())),
                "{kind}"
            );
        }
        assert!(not_used(translate(
            &event("charge.succeeded", json!({"id": "x"})),
            now()
        )));
    }

    #[test]
    fn a_payment_intent_success_confirms_with_the_amount_received() {
        let object = json!({"id": "pi_1", "amount": 500, "amount_received": 300, "currency": "eur",
                            "latest_charge": "ch_1", "metadata": {"latchkey_payment_id": PAYMENT}});
        let Translation::Apply {
            references,
            command,
        } = translate(&event("payment_intent.succeeded", object), now()).unwrap()
        else {
            panic!("expected a command")
        };
        assert_eq!(
            references[0],
            PaymentReference::PaymentId(Uuid::parse_str(PAYMENT).unwrap())
        );
        assert_eq!(
            references[1],
            PaymentReference::PaymentIntent("pi_1".into())
        );
        match command {
            PaymentCommand::ConfirmPayment {
                payment_intent_id,
                charge_id,
                amount_received,
                stripe_event,
                ..
            } => {
                assert_eq!(payment_intent_id, "pi_1");
                assert_eq!(charge_id.as_deref(), Some("ch_1"));
                assert_eq!(amount_received.amount_minor, 300);
                assert_eq!(stripe_event.id, "evt_1");
                assert_eq!(stripe_event.created.timestamp(), 1_700_000_000);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn an_unpaid_checkout_completion_grants_nothing() {
        let object = json!({"id": "cs_1", "payment_status": "unpaid", "payment_intent": "pi_1", "amount_total": 500, "currency": "eur"});
        assert!(matches!(
            translate(&event("checkout.session.completed", object), now()).unwrap(),
            Translation::Ignore { .. }
        ));
    }

    #[test]
    fn a_refund_uses_the_cumulative_total_and_finds_the_payment_through_its_intent() {
        let object = json!({"id": "ch_1", "payment_intent": "pi_1", "amount": 500, "amount_refunded": 200, "currency": "eur", "metadata": {}});
        let Translation::Apply {
            references,
            command,
        } = translate(&event("charge.refunded", object), now()).unwrap()
        else {
            panic!("expected a command")
        };
        assert_eq!(
            references,
            vec![
                PaymentReference::PaymentIntent("pi_1".into()),
                PaymentReference::Charge("ch_1".into())
            ]
        );
        assert!(
            matches!(command, PaymentCommand::RecordRefund { amount_refunded, .. } if amount_refunded.amount_minor == 200)
        );
    }

    #[test]
    fn a_refund_report_names_our_request_and_the_charge_report_carries_its_key() {
        let request = "0f1c1f7e-6d1f-4b4e-9d0e-3c2b1a0f9e8d";
        let object = json!({"id": "re_1", "object": "refund", "amount": 300, "charge": "ch_1",
            "created": 1_700_000_000, "currency": "eur", "payment_intent": "pi_1",
            "status": "failed", "failure_reason": "expired_or_canceled_card",
            "metadata": {"latchkey_payment_id": PAYMENT, "latchkey_refund_request_id": request}});
        let Translation::Apply {
            references,
            command,
        } = translate(&event("refund.failed", object), now()).unwrap()
        else {
            panic!("expected a command")
        };
        assert_eq!(
            references[0],
            PaymentReference::PaymentId(Uuid::parse_str(PAYMENT).unwrap())
        );
        match command {
            PaymentCommand::RecordRefundUpdate {
                refund_id,
                refund_status,
                refund_request_id,
                failure_reason,
                amount,
                ..
            } => {
                assert_eq!(refund_id, "re_1");
                assert_eq!(refund_status, RefundStatus::Failed);
                assert_eq!(refund_request_id, Uuid::parse_str(request).ok());
                assert_eq!(failure_reason.as_deref(), Some("expired_or_canceled_card"));
                assert_eq!(amount.amount_minor, 300);
            }
            other => panic!("unexpected {other:?}"),
        }
        let mut charge = event(
            "charge.refunded",
            json!({"id": "ch_1", "payment_intent": "pi_1", "amount_refunded": 300, "currency": "eur"}),
        );
        charge["request"] =
            json!({"id": "req_1", "idempotency_key": format!("latchkey-refund-{request}")});
        let Translation::Apply {
            command:
                PaymentCommand::RecordRefund {
                    refund_request_id, ..
                },
            ..
        } = translate(&charge, now()).unwrap()
        else {
            panic!("expected a refund")
        };
        assert_eq!(refund_request_id, Uuid::parse_str(request).ok());
    }

    #[test]
    fn a_decline_keeps_stripe_s_codes_in_the_reason() {
        let object = json!({"id": "pi_1", "last_payment_error": {"code": "card_declined", "decline_code": "insufficient_funds", "message": "Your card has insufficient funds."}});
        let Translation::Apply {
            command: PaymentCommand::RecordFailure { reason, .. },
            ..
        } = translate(&event("payment_intent.payment_failed", object), now()).unwrap()
        else {
            panic!("expected a failure")
        };
        assert_eq!(
            reason,
            "card_declined (insufficient_funds): Your card has insufficient funds."
        );
    }

    #[test]
    fn unknown_types_are_ignored_and_broken_events_are_errors() {
        assert!(matches!(
            translate(&event("customer.created", json!({"id": "cus_1"})), now()).unwrap(),
            Translation::Ignore { reason } if reason.contains("customer.created")
        ));
        let error = translate(
            &event("payment_intent.succeeded", json!({"id": "pi_1"})),
            now(),
        )
        .unwrap_err();
        assert!(error.problem.contains("amount_received"));
        assert!(translate(&json!({"id": "evt_x"}), now()).is_err());
    }
}
