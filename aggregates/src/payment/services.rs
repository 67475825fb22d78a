//! The port through which a payment moves money at Stripe.
//!
//! The application implements [`PaymentGateway`] with Stripe's API. Every request carries an
//! idempotency key derived from our ids, because cqrs-es may run `handle` twice for one
//! command (after an optimistic-concurrency conflict) and the second call must not capture
//! or refund twice: Stripe replays the first answer for a repeated key.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use uuid::Uuid;

use super::refunds::RefundStatus;
use crate::Money;

/// The Idempotency-Key of a payment's capture: one capture per payment, so a job re-run
/// after a crash gets Stripe's first answer replayed.
pub fn capture_idempotency_key(payment_id: Uuid) -> String {
    format!("latchkey-capture-{payment_id}")
}

/// The Idempotency-Key of the release of a payment's authorization.
pub fn cancel_idempotency_key(payment_id: Uuid) -> String {
    format!("latchkey-cancel-{payment_id}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureRequest {
    pub payment_intent_id: String,
    pub amount_to_capture: Money,
    /// `latchkey-capture-<payment id>`.
    pub idempotency_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelAuthorizationRequest {
    pub payment_intent_id: String,
    /// Free text for our records; the adapter maps it to Stripe's `cancellation_reason`.
    pub reason: String,
    /// `latchkey-cancel-<payment id>`.
    pub idempotency_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequest {
    pub payment_intent_id: String,
    pub amount: Money,
    pub reason: String,
    /// `latchkey-refund-<refund request id>`.
    pub idempotency_key: String,
    /// Sent as the refund's metadata (`latchkey_payment_id`, `latchkey_refund_request_id`),
    /// so `refund.*` webhooks find the payment and the request.
    pub payment_id: Uuid,
    pub refund_request_id: Uuid,
}

/// Stripe created a refund; whether it counts is reported by `refund.*` / `charge.refunded`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundReceipt {
    /// `re_…`.
    pub refund_id: String,
    pub amount: Money,
    pub status: RefundStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GatewayErrorKind {
    /// Network trouble, rate limit, Stripe 5xx: the same request may succeed later.
    Retryable,
    /// Stripe refused the request itself (invalid state, over-refund): do not retry as is.
    Permanent,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct GatewayError {
    pub kind: GatewayErrorKind,
    pub message: String,
}

impl GatewayError {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            kind: GatewayErrorKind::Retryable,
            message: message.into(),
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            kind: GatewayErrorKind::Permanent,
            message: message.into(),
        }
    }
}

/// Capture, cancel and refund a PaymentIntent. Each call must be safe to repeat with the
/// same idempotency key.
#[async_trait]
pub trait PaymentGateway: Send + Sync {
    async fn capture(&self, request: CaptureRequest) -> Result<(), GatewayError>;
    async fn cancel_authorization(
        &self,
        request: CancelAuthorizationRequest,
    ) -> Result<(), GatewayError>;
    async fn refund(&self, request: RefundRequest) -> Result<RefundReceipt, GatewayError>;
}

/// The Payment aggregate's `Services`.
#[derive(Clone)]
pub struct PaymentServices {
    pub gateway: Arc<dyn PaymentGateway>,
}

impl PaymentServices {
    pub fn new(gateway: Arc<dyn PaymentGateway>) -> Self {
        Self { gateway }
    }
}

impl fmt::Debug for PaymentServices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PaymentServices").finish_non_exhaustive()
    }
}

/// A scripted [`PaymentGateway`] for tests (enable the `testing` feature outside this crate).
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use async_trait::async_trait;

    use super::{
        CancelAuthorizationRequest, CaptureRequest, GatewayError, PaymentGateway, RefundReceipt,
        RefundRequest,
    };
    use crate::fake::{CallLog, Script};

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum PaymentGatewayCall {
        Capture(CaptureRequest),
        CancelAuthorization(CancelAuthorizationRequest),
        Refund(RefundRequest),
    }

    /// Answers from queued responses; with nothing queued every call succeeds, and a
    /// refund gets the receipt `re_fake_<n>` where n counts refund calls from 1.
    #[derive(Debug, Default)]
    pub struct FakePaymentGateway {
        captures: Script<Result<(), GatewayError>>,
        cancellations: Script<Result<(), GatewayError>>,
        refunds: Script<Result<RefundReceipt, GatewayError>>,
        calls: CallLog<PaymentGatewayCall>,
    }

    impl FakePaymentGateway {
        pub fn new() -> Self {
            Self::default()
        }

        pub fn queue_capture(&self, response: Result<(), GatewayError>) {
            self.captures.push(response);
        }

        pub fn queue_cancellation(&self, response: Result<(), GatewayError>) {
            self.cancellations.push(response);
        }

        pub fn queue_refund(&self, response: Result<RefundReceipt, GatewayError>) {
            self.refunds.push(response);
        }

        /// Every call received, in order.
        pub fn calls(&self) -> Vec<PaymentGatewayCall> {
            self.calls.all()
        }
    }

    #[async_trait]
    impl PaymentGateway for FakePaymentGateway {
        async fn capture(&self, request: CaptureRequest) -> Result<(), GatewayError> {
            self.calls.record(PaymentGatewayCall::Capture(request));
            self.captures.next().unwrap_or(Ok(()))
        }

        async fn cancel_authorization(
            &self,
            request: CancelAuthorizationRequest,
        ) -> Result<(), GatewayError> {
            self.calls
                .record(PaymentGatewayCall::CancelAuthorization(request));
            self.cancellations.next().unwrap_or(Ok(()))
        }

        async fn refund(&self, request: RefundRequest) -> Result<RefundReceipt, GatewayError> {
            self.calls
                .record(PaymentGatewayCall::Refund(request.clone()));
            let refunds_so_far = self
                .calls
                .all()
                .iter()
                .filter(|call| matches!(call, PaymentGatewayCall::Refund(_)))
                .count();
            let amount = request.amount.clone();
            self.refunds.next().unwrap_or_else(|| {
                Ok(RefundReceipt {
                    refund_id: format!("re_fake_{refunds_so_far}"),
                    amount,
                    status: super::RefundStatus::Succeeded,
                })
            })
        }
    }
}
