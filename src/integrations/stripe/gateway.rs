//! The Payment aggregate's `PaymentGateway` port and the checkout port on the Stripe
//! client, and the inbox's `DeliveryProcessor` on the Payment aggregate.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use latchkey_aggregates::payment::services::{
    CancelAuthorizationRequest, CaptureRequest, GatewayError, PaymentGateway, RefundReceipt,
    RefundRequest,
};
use latchkey_aggregates::payment::{PaymentTarget, RefundStatus};

use super::client::{
    CheckoutRequest as StripeCheckoutRequest, CheckoutTarget, StripeApiError, StripeClient,
};
use super::processing::{DeliveryProcessor, ProcessError, ProcessOutcome};
use crate::cqrs::Buses;
use crate::payments::checkout::{CheckoutCreated, CheckoutError, CheckoutGateway, CheckoutRequest};
use crate::payments::stripe_facts::{self, StripeOutcome};
use crate::store::inbox::InboxDelivery;
use crate::store::Database;
use crate::stripe_events::{PAYMENT_ID_METADATA, REFUND_REQUEST_METADATA};

fn gateway_error(error: StripeApiError) -> GatewayError {
    if error.retryable() {
        GatewayError::retryable(error.to_string())
    } else {
        GatewayError::permanent(error.to_string())
    }
}

/// Capture, cancel and refund through Stripe.
pub struct StripePaymentGateway {
    client: StripeClient,
}

impl StripePaymentGateway {
    pub fn new(client: StripeClient) -> Self {
        StripePaymentGateway { client }
    }
}

#[async_trait]
impl PaymentGateway for StripePaymentGateway {
    async fn capture(&self, request: CaptureRequest) -> Result<(), GatewayError> {
        self.client
            .capture(
                &request.payment_intent_id,
                Some(request.amount_to_capture.amount_minor),
                &request.idempotency_key,
            )
            .await
            .map(|_| ())
            .map_err(gateway_error)
    }

    async fn cancel_authorization(
        &self,
        request: CancelAuthorizationRequest,
    ) -> Result<(), GatewayError> {
        self.client
            .cancel(&request.payment_intent_id, &request.idempotency_key)
            .await
            .map(|_| ())
            .map_err(gateway_error)
    }

    async fn refund(&self, request: RefundRequest) -> Result<RefundReceipt, GatewayError> {
        let metadata = HashMap::from([
            (
                PAYMENT_ID_METADATA.to_string(),
                request.payment_id.to_string(),
            ),
            (
                REFUND_REQUEST_METADATA.to_string(),
                request.refund_request_id.to_string(),
            ),
        ]);
        let refund = self
            .client
            .refund(
                &request.payment_intent_id,
                Some(request.amount.amount_minor),
                metadata,
                &request.idempotency_key,
            )
            .await
            .map_err(gateway_error)?;
        // A status this version does not know is still a refund Stripe created; its
        // `refund.*` webhooks decide what it counts for.
        let status = refund
            .status
            .as_deref()
            .and_then(RefundStatus::parse)
            .unwrap_or(RefundStatus::Pending);
        Ok(RefundReceipt {
            refund_id: refund.id,
            amount: request.amount.with_amount(refund.amount),
            status,
        })
    }
}

/// Hosted Stripe Checkout for guests.
pub struct StripeCheckoutGateway {
    client: StripeClient,
}

impl StripeCheckoutGateway {
    pub fn new(client: StripeClient) -> Self {
        StripeCheckoutGateway { client }
    }
}

/// The path and query of one of our public URLs (the client joins it onto
/// `LATCHKEY_PUBLIC_URL` again).
fn path_of(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => match parsed.query() {
            Some(query) => format!("{}?{query}", parsed.path()),
            None => parsed.path().to_string(),
        },
        Err(_) => url.to_string(),
    }
}

#[async_trait]
impl CheckoutGateway for StripeCheckoutGateway {
    async fn create_checkout(
        &self,
        request: CheckoutRequest,
    ) -> Result<CheckoutCreated, CheckoutError> {
        let target = match &request.target {
            PaymentTarget::Door { door_uid } => CheckoutTarget::Door {
                door_uid: door_uid.clone(),
            },
            PaymentTarget::Device {
                device_uid,
                plan_id,
            } => CheckoutTarget::Device {
                device_uid: device_uid.clone(),
                plan_id: plan_id.clone(),
            },
        };
        let stripe_request = StripeCheckoutRequest {
            payment_id: request.payment_id.to_string(),
            target,
            amount: request.price.amount_minor,
            currency: request.price.currency.to_string(),
            description: request.description.clone(),
            email: Some(request.guest_email.clone()),
            success_path: path_of(&request.success_url),
            cancel_path: path_of(&request.cancel_url),
            expires_at: request.expires_at.map(|at| at.timestamp()),
        };
        let created = if request.manual_capture {
            self.client.create_device_checkout(&stripe_request).await
        } else {
            self.client.create_door_checkout(&stripe_request).await
        }
        .map_err(|error| CheckoutError {
            message: error.to_string(),
        })?;
        Ok(CheckoutCreated {
            checkout_session_id: created.session_id,
            url: created.url,
            payment_intent_id: created.payment_intent,
            expires_at: created.expires_at,
        })
    }
}

/// Applies stored Stripe events to payments.
pub struct PaymentProcessor {
    buses: Arc<Buses>,
    database: Database,
    /// Where the current key's mode is read, when events are checked against it.
    stripe: Option<super::StripeRuntime>,
}

impl PaymentProcessor {
    pub fn new(buses: Arc<Buses>, database: Database) -> Self {
        PaymentProcessor {
            buses,
            database,
            stripe: None,
        }
    }

    /// Refuses events whose `livemode` differs from the mode of the key in use (read
    /// from `stripe` at each event, so a key saved on the settings page counts at once):
    /// a test-mode event must never move a live ledger, nor the reverse.
    pub fn checking_mode_of(mut self, stripe: super::StripeRuntime) -> Self {
        self.stripe = Some(stripe);
        self
    }

    fn wrong_mode(&self, event: &serde_json::Value) -> Option<String> {
        let expected = self.stripe.as_ref()?.livemode()?;
        let livemode = event.get("livemode")?.as_bool()?;
        (livemode != expected).then(|| {
            let mode = |live: bool| if live { "live" } else { "test" };
            format!(
                "a {}-mode event while the secret key is in {} mode (livemode {livemode}): \
                 not applied; check which Stripe account and mode the webhook endpoint and \
                 STRIPE_WEBHOOK_SECRET belong to",
                mode(livemode),
                mode(expected)
            )
        })
    }
}

#[async_trait]
impl DeliveryProcessor for PaymentProcessor {
    async fn process(&self, delivery: &InboxDelivery) -> Result<ProcessOutcome, ProcessError> {
        let event = delivery.json().map_err(|error| {
            ProcessError::retryable(format!("stored payload is not JSON: {error}"))
        })?;
        if let Some(reason) = self.wrong_mode(&event) {
            tracing::warn!(event_id = %delivery.event_id, %reason, "stripe event of the other mode");
            return Ok(ProcessOutcome::Ignored { reason });
        }
        match stripe_facts::apply(&self.buses, &self.database, &event).await {
            Ok(StripeOutcome::Applied { payment_id }) => Ok(ProcessOutcome::Processed {
                payment_id: Some(payment_id.to_string()),
            }),
            Ok(StripeOutcome::Ignored { reason }) => Ok(ProcessOutcome::Ignored { reason }),
            Ok(StripeOutcome::Flagged { payment_id, note }) => Ok(ProcessOutcome::Flagged {
                payment_id: payment_id.to_string(),
                note,
            }),
            Err(retry) => Err(ProcessError::retryable(retry.0)),
        }
    }
}
