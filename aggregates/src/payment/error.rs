//! Why a payment command was refused. Each message says what is wrong and, where it
//! helps, what to do instead.

use crate::{Currency, Money};

use super::events::PaymentStatus;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PaymentError {
    #[error("this payment has not been started; start the checkout first")]
    NotStarted,
    #[error("payment was already started with {price} for {target}; start a new payment instead of changing a locked price")]
    AlreadyStarted { price: Money, target: String },
    #[error("the checkout is invalid: {reason}")]
    InvalidCheckout { reason: String },
    #[error("Stripe reported an amount in {reported} but the payment is in {expected}")]
    CurrencyMismatch {
        expected: Currency,
        reported: Currency,
    },
    #[error("Stripe reported PaymentIntent {reported} but this payment belongs to PaymentIntent {expected}")]
    PaymentIntentMismatch { expected: String, reported: String },
    #[error("Stripe reported charge {reported} but this payment's charge is {expected}")]
    ChargeMismatch { expected: String, reported: String },
    #[error(
        "Stripe reported Checkout Session {reported} but this payment's session is {expected}"
    )]
    CheckoutSessionMismatch { expected: String, reported: String },
    #[error("payment was already confirmed with {recorded} received; a confirmation for {reported} contradicts it")]
    ConfirmationAmountMismatch { recorded: Money, reported: Money },
    #[error("payment is {status} and holds no access for a decision: only a payment whose amount was below its price waits for an operator to grant access")]
    AccessNotHeld { status: PaymentStatus },
    #[error("an amount must be positive; got {amount}")]
    NonPositiveAmount { amount: Money },
    #[error("Stripe reported {reported} refunded in total, more than the {limit} received")]
    RefundExceedsAmountReceived { reported: Money, limit: Money },
    #[error("Stripe reported {received} received, less than the {refunded} already refunded; the Stripe history is inconsistent")]
    ReceivedBelowRefunded { received: Money, refunded: Money },
    #[error("payment is {status}; only an authorized payment can be captured")]
    NotCapturable { status: PaymentStatus },
    #[error("a capture of {requested} was already requested; wait for Stripe to confirm it")]
    CaptureAlreadyRequested { requested: Money },
    #[error("cannot capture {requested}: only {capturable} is authorized")]
    CaptureExceedsAuthorization { requested: Money, capturable: Money },
    #[error("payment is {status}; only an authorized payment can be cancelled")]
    NotCancellable { status: PaymentStatus },
    #[error("payment is {status}; only a succeeded or partially refunded payment can be refunded")]
    NotRefundable { status: PaymentStatus },
    #[error("cannot refund {requested}: only {refundable} is still refundable")]
    RefundExceedsRefundable { requested: Money, refundable: Money },
    #[error("no refund request {refund_request_id} on this payment")]
    UnknownRefundRequest { refund_request_id: uuid::Uuid },
    #[error("the release of this authorization was already decided; it can no longer be captured")]
    ReleaseAlreadyOrdered,
    #[error("no {operation} was decided on this payment; nothing to record")]
    NothingOrdered { operation: &'static str },
}
