//! What the application asks of a payment.
//!
//! Three families: the guest's checkout (`StartCheckout`, `RecordCheckoutSession`), facts
//! reported by Stripe webhooks (`Record*`, `ConfirmPayment`), and decisions that move money
//! through the [`PaymentGateway`](super::services::PaymentGateway) (`CapturePayment`,
//! `CancelAuthorization`, `RequestRefund`). Every command says who asked (`actor`) and
//! when (`at`, from the caller's clock: the aggregate never reads the time itself).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::events::{DisputeUpdate, LockedOffer, PaymentTarget, StripeEventRef};
use super::refunds::RefundStatus;
use crate::{Actor, Money};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PaymentCommand {
    /// Opens the payment and locks its price. Sending the identical command again is a
    /// no-op; a different price, target or email is refused.
    StartCheckout {
        payment_id: Uuid,
        target: PaymentTarget,
        price: Money,
        guest_email: String,
        actor: Actor,
        at: DateTime<Utc>,
        /// The offer beyond the price (minutes, names, hash); see [`LockedOffer`]. Boxed:
        /// commands travel by value and this is their largest field.
        #[serde(default)]
        offer: Option<Box<LockedOffer>>,
    },
    /// Records the Checkout Session the application created at Stripe.
    RecordCheckoutSession {
        checkout_session_id: String,
        payment_intent_id: Option<String>,
        expires_at: Option<DateTime<Utc>>,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// `payment_intent.amount_capturable_updated`: funds are held for manual capture.
    RecordAuthorization {
        payment_intent_id: String,
        amount_capturable: Money,
        stripe_event: StripeEventRef,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// `payment_intent.payment_failed`: one attempt failed; `reason` is Stripe's
    /// `last_payment_error` in words (code and message).
    RecordFailure {
        payment_intent_id: String,
        reason: String,
        stripe_event: StripeEventRef,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// `payment_intent.succeeded`: Stripe collected `amount_received`.
    ConfirmPayment {
        payment_intent_id: String,
        charge_id: Option<String>,
        amount_received: Money,
        stripe_event: StripeEventRef,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// `charge.refunded` (also for partial refunds): `amount_refunded` is the charge's
    /// cumulative refunded total, not the amount of this one refund.
    RecordRefund {
        payment_intent_id: Option<String>,
        charge_id: String,
        amount_refunded: Money,
        /// The request behind it, from the event's `request.idempotency_key`.
        #[serde(default)]
        refund_request_id: Option<Uuid>,
        stripe_event: StripeEventRef,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// `refund.created`, `refund.updated`, `refund.failed`: one refund's state.
    RecordRefundUpdate {
        refund_id: String,
        charge_id: String,
        payment_intent_id: Option<String>,
        amount: Money,
        refund_status: RefundStatus,
        /// The refund's `created`.
        refund_created: DateTime<Utc>,
        /// From the refund's `latchkey_refund_request_id` metadata.
        refund_request_id: Option<Uuid>,
        failure_reason: Option<String>,
        stripe_event: StripeEventRef,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// What Stripe answered to our refund request (sent by the refund job).
    RecordRefundSubmission {
        refund_request_id: Uuid,
        outcome: RefundSubmissionOutcome,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// `payment_intent.canceled`.
    RecordCancellation {
        payment_intent_id: String,
        cancellation_reason: Option<String>,
        stripe_event: StripeEventRef,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// `checkout.session.expired`.
    RecordCheckoutExpired {
        checkout_session_id: String,
        stripe_event: StripeEventRef,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// `charge.dispute.created`.
    RecordDispute {
        dispute_id: String,
        amount: Money,
        reason: String,
        stripe_event: StripeEventRef,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// `charge.dispute.funds_withdrawn`, `charge.dispute.funds_reinstated`,
    /// `charge.dispute.closed`: what a dispute did to the money.
    RecordDisputeUpdate {
        dispute_id: String,
        /// The dispute's `amount`: what it withdraws, or reinstates.
        amount: Money,
        update: DisputeUpdate,
        stripe_event: StripeEventRef,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// An operator's decision on a payment held for an amount below its price: grant the
    /// access it paid (part of) for anyway.
    GrantAccess {
        reason: String,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// Decides to capture an authorized payment; `None` captures everything authorized, a
    /// smaller amount is a partial capture (Stripe releases the rest). Only journalled
    /// here: the capture job asks Stripe and sends `RecordCaptureSubmission`.
    CapturePayment {
        amount_to_capture: Option<Money>,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// Decides to release an authorization, e.g. when the device never started. Only
    /// journalled here: the cancellation job asks Stripe and sends
    /// `RecordCancellationSubmission`. Sending it again is a no-op.
    CancelAuthorization {
        reason: String,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// What Stripe answered to our capture (sent by the capture job).
    RecordCaptureSubmission {
        outcome: StripeAnswer,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// What Stripe answered to our release of the authorization (sent by the
    /// cancellation job).
    RecordCancellationSubmission {
        outcome: StripeAnswer,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// Decides to refund `amount` (`None`: all that is neither refunded nor already being
    /// refunded) and journals who and why; the refund job then asks Stripe.
    /// `refund_request_id` names this request: sending it again is a no-op, and it is the
    /// root of the Stripe idempotency key. Automatic refunds (a code that cannot be issued)
    /// send this command too, with `Actor::System` and their reason.
    RequestRefund {
        refund_request_id: Uuid,
        amount: Option<Money>,
        reason: String,
        actor: Actor,
        at: DateTime<Utc>,
    },
}

/// Stripe's answer to one refund request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RefundSubmissionOutcome {
    /// Stripe created (or, for a repeated idempotency key, replayed) refund `stripe_refund_id`.
    Accepted {
        stripe_refund_id: String,
        amount: Money,
        refund_status: RefundStatus,
    },
    /// Stripe refused the request for good; `reason` is its message.
    Refused { reason: String },
}

/// Stripe's answer to a capture or a cancellation we asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum StripeAnswer {
    Accepted,
    /// Stripe refused for good (a decline, a PaymentIntent in the wrong state); `reason`
    /// is its message.
    Refused {
        reason: String,
    },
}
