//! Applying one Stripe event to the ledger: translate it, find its payment, check that a
//! checkout session event concerns the session recorded for that payment, execute the
//! Payment command, and only then remember the Stripe ids it reveals (an event the ledger
//! refused must not bind ids that later events would be matched by).
//!
//! Called by the webhook inbox (inline and by its retry worker) and by the catch-up job,
//! at least once per event: everything here is idempotent (the Payment aggregate ignores a
//! repeated Stripe event id; `payment_refs` keeps the first writer).

use chrono::Utc;
use cqrs_es::AggregateError;
use latchkey_aggregates::payment::PaymentError;
use serde_json::Value;
use uuid::Uuid;

use super::refs;
use crate::cqrs::{Buses, CommandMetadata};
use crate::store::Database;
use crate::stripe_events::{translate, PaymentReference, Translation};

/// What became of an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StripeOutcome {
    /// The payment's aggregate took the fact (possibly as a recorded duplicate).
    Applied { payment_id: Uuid },
    /// Nothing to do; the reason is kept on the delivery.
    Ignored { reason: String },
    /// The payment recorded the fact as an amount that is not its price (audit
    /// `amount_mismatch`): done, never retried, with the note kept on the delivery.
    Flagged { payment_id: Uuid, note: String },
}

/// Worth retrying later: the database, a conflict, a payment not known *yet*, or a fact the
/// ledger refused (kept failing and visible to operators rather than silently dropped).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RetryLater(pub String);

/// Applies one Stripe event (its JSON, as Stripe sent it).
pub async fn apply(
    buses: &Buses,
    database: &Database,
    event: &Value,
) -> Result<StripeOutcome, RetryLater> {
    let event_id = event
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("(no id)")
        .to_string();
    let translation = match translate(event, Utc::now()) {
        Ok(translation) => translation,
        Err(error) => {
            return Ok(StripeOutcome::Ignored {
                reason: format!("unreadable for Latchkey: {error}"),
            })
        }
    };
    let (references, command) = match translation {
        Translation::Ignore { reason } => return Ok(StripeOutcome::Ignored { reason }),
        Translation::Apply {
            references,
            command,
        } => (references, command),
    };
    let found = refs::resolve(database, &references)
        .await
        .map_err(|error| RetryLater(format!("looking up the payment failed: {error}")))?;
    let Some(payment_id) = found else {
        return not_found(&references);
    };
    if let Some(refused) = foreign_checkout_session(database, event, payment_id).await? {
        return refused;
    }
    let metadata =
        CommandMetadata::new("stripe", "webhook").with("stripe_event_id", event_id.clone());
    match buses
        .payments
        .execute(&payment_id.to_string(), command, metadata)
        .await
    {
        Ok(()) => {
            // A failure here is retried; the fact is applied once however often it comes.
            remember_ids(database, event, payment_id).await?;
            if let Some(note) = mismatch_note(buses, payment_id, &event_id).await? {
                tracing::warn!(payment_id = %payment_id, stripe_event = %event_id, %note, "Stripe amount is not the price");
                return Ok(StripeOutcome::Flagged { payment_id, note });
            }
            tracing::info!(payment_id = %payment_id, stripe_event = %event_id, "Stripe event applied");
            Ok(StripeOutcome::Applied { payment_id })
        }
        Err(AggregateError::UserError(PaymentError::NotStarted)) => Ok(StripeOutcome::Ignored {
            reason: format!("payment {payment_id} was never started in this ledger"),
        }),
        Err(AggregateError::UserError(refusal)) => {
            tracing::warn!(payment_id = %payment_id, stripe_event = %event_id, refusal = %refusal, "the ledger refused a Stripe fact");
            Err(RetryLater(format!(
                "the ledger refused this fact: {refusal}"
            )))
        }
        Err(other) => Err(RetryLater(format!("could not record the fact: {other}"))),
    }
}

/// What the deliveries page says when this event reported an amount that is not the
/// payment's price.
async fn mismatch_note(
    buses: &Buses,
    payment_id: Uuid,
    event_id: &str,
) -> Result<Option<String>, RetryLater> {
    let (payment, _) = buses
        .payments
        .load(&payment_id.to_string())
        .await
        .map_err(|error| RetryLater(format!("reading the payment back failed: {error}")))?;
    Ok(payment
        .amount_mismatch()
        .filter(|mismatch| mismatch.stripe_event_id == event_id)
        .map(|mismatch| mismatch.describe()))
}

/// No payment matched. Our own metadata pointing nowhere, or a checkout/payment intent
/// without our metadata, is not ours and never will be. A charge or dispute may simply have
/// arrived before the event that told us its payment intent: retry.
fn not_found(references: &[PaymentReference]) -> Result<StripeOutcome, RetryLater> {
    match references.first() {
        Some(PaymentReference::PaymentId(id)) => Ok(StripeOutcome::Ignored {
            reason: format!("payment {id} named in the metadata is not in this ledger"),
        }),
        Some(PaymentReference::Charge(id)) => Err(RetryLater(format!("no payment is known yet for charge {id}"))),
        Some(PaymentReference::PaymentIntent(id))
            if references.iter().any(|r| matches!(r, PaymentReference::Charge(_))) =>
        {
            Err(RetryLater(format!("no payment is known yet for payment intent {id}")))
        }
        _ => Ok(StripeOutcome::Ignored {
            reason: "no Latchkey payment matches (no latchkey_payment_id metadata): created outside Latchkey"
                .to_string(),
        }),
    }
}

/// A `checkout.session.*` event must be about the Checkout Session we created for the
/// payment its metadata names (recorded in `payment_refs` when the checkout started): a
/// session made elsewhere with copied metadata must not confirm our payment. A session
/// bound to another payment is ignored (with the reason kept); one we never recorded is
/// retried and stays visible as failed rather than applied.
async fn foreign_checkout_session(
    database: &Database,
    event: &Value,
    payment_id: Uuid,
) -> Result<Option<Result<StripeOutcome, RetryLater>>, RetryLater> {
    let is_checkout = event
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|kind| kind.starts_with("checkout.session."));
    if !is_checkout {
        return Ok(None);
    }
    let session_id = event["data"]["object"]["id"].as_str().unwrap_or_default();
    let reference = [PaymentReference::CheckoutSession(session_id.to_string())];
    let owner = refs::resolve(database, &reference)
        .await
        .map_err(|error| RetryLater(format!("looking up the checkout session failed: {error}")))?;
    Ok(match owner {
        Some(owner) if owner == payment_id => None,
        Some(owner) => {
            tracing::warn!(payment_id = %payment_id, session_id, owner = %owner, "a checkout session event names another payment");
            Some(Ok(StripeOutcome::Ignored {
                reason: format!(
                    "checkout session {session_id} belongs to payment {owner}, not to payment \
                     {payment_id} named in its metadata"
                ),
            }))
        }
        None => {
            tracing::warn!(payment_id = %payment_id, session_id, "a checkout session event for a session we never created");
            Some(Err(RetryLater(format!(
                "checkout session {session_id} is not the session recorded for payment \
                 {payment_id}: not applied"
            ))))
        }
    })
}

/// Remembers the Stripe ids this event shows for the payment, for later events that carry
/// no metadata.
async fn remember_ids(
    database: &Database,
    event: &Value,
    payment_id: Uuid,
) -> Result<(), RetryLater> {
    let object = &event["data"]["object"];
    let mut ids: Vec<&str> = Vec::new();
    for field in ["id", "payment_intent", "latest_charge", "charge"] {
        if let Some(id) = object.get(field).and_then(Value::as_str) {
            ids.push(id);
        }
    }
    for id in ids.into_iter().filter(|id| !id.is_empty()) {
        refs::remember(database, id, payment_id)
            .await
            .map_err(|error| RetryLater(format!("remembering {id} failed: {error}")))?;
    }
    Ok(())
}
