//! Per-payment re-sync (issue 14): the catch-up job walks Stripe's event list, but a payment
//! whose every webhook was lost *and* whose events fell out of that list (older than Stripe
//! keeps, or lost before the cursor existed) would stay `pending` or `authorized` for ever.
//! So each catch-up run also asks Stripe directly about payments stuck past a threshold:
//! the PaymentIntent (succeeded, requires_capture, canceled) and, for a pending payment,
//! the Checkout Session (expired). Each fact Stripe holds that the payment lacks becomes a
//! synthetic event in the inbox — the PaymentIntent or session as Stripe returned it,
//! under an id derived from the object and its status (`evt_resync_…`), so a later run
//! stores it once — and is processed like any delivery: the Payment aggregate ignores a
//! fact it already has, so a real webhook arriving afterwards changes nothing.

use std::time::Duration;

use latchkey_projections::payments::{self, PaymentFilter, PaymentRow};
use serde_json::{json, Value};
use tracing::info;

use super::catch_up::{feed_raw, CatchUpError, CatchUpReport};
use super::client::StripeClient;
use crate::projections_runtime::PooledConn;
use crate::store::inbox::Inbox;

/// Payments asked about per status and run, newest first; an abandoned checkout leaves the
/// set when its session expires (30 minutes by default), so the set stays small.
const RESYNC_BATCH: i64 = 200;

/// Asks Stripe about every payment `pending` or `authorized` for longer than `older_than`.
pub async fn resync_stuck(
    inbox: &Inbox,
    client: &StripeClient,
    older_than: Duration,
    report: &mut CatchUpReport,
) -> Result<(), CatchUpError> {
    let older_than = chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::MAX);
    let threshold = chrono::Utc::now() - older_than;
    for status in ["pending", "authorized"] {
        let rows = stuck(inbox, status, threshold).await?;
        for row in rows {
            for event in facts_of(client, &row).await? {
                report.listed += 1;
                feed_raw(inbox, &event, report).await?;
            }
        }
    }
    Ok(())
}

async fn stuck(
    inbox: &Inbox,
    status: &str,
    created_before: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<PaymentRow>, CatchUpError> {
    let mut pooled = PooledConn::acquire(inbox.database()).await?;
    let filter = PaymentFilter {
        status: Some(status.to_string()),
        to: Some(created_before),
        ..PaymentFilter::default()
    };
    payments::list(&mut pooled.conn(), &filter, None, RESYNC_BATCH)
        .await
        .map_err(|error| CatchUpError::ReadModel(error.to_string()))
}

/// The facts Stripe holds about one stuck payment, as synthetic events.
async fn facts_of(client: &StripeClient, row: &PaymentRow) -> Result<Vec<Value>, CatchUpError> {
    let mut events = Vec::new();
    if let Some(intent_id) = &row.stripe_payment_intent {
        let intent = client.retrieve_raw("payment_intents", intent_id).await?;
        let status = intent["status"].as_str().unwrap_or_default().to_string();
        let kind = match status.as_str() {
            "succeeded" => Some("payment_intent.succeeded"),
            "requires_capture" if row.status == "pending" => {
                Some("payment_intent.amount_capturable_updated")
            }
            "canceled" => Some("payment_intent.canceled"),
            _ => None,
        };
        if let Some(kind) = kind {
            events.push(synthetic(kind, intent_id, &status, intent));
        }
    }
    if events.is_empty() && row.status == "pending" {
        if let Some(session_id) = &row.stripe_checkout_session {
            let session = client.retrieve_raw("checkout/sessions", session_id).await?;
            if session["status"] == "expired" {
                events.push(synthetic(
                    "checkout.session.expired",
                    session_id,
                    "expired",
                    session,
                ));
            }
        }
    }
    if !events.is_empty() {
        info!(payment_id = %row.payment_id, facts = events.len(), "re-sync found facts Stripe holds for a stuck payment");
    }
    Ok(events)
}

/// An event as Stripe would have sent it for `object`, under a stable id.
fn synthetic(kind: &str, object_id: &str, status: &str, object: Value) -> Value {
    json!({
        "id": format!("evt_resync_{object_id}_{status}"),
        "object": "event",
        "type": kind,
        "created": chrono::Utc::now().timestamp(),
        "livemode": object["livemode"].as_bool().unwrap_or(false),
        "data": {"object": object},
    })
}
