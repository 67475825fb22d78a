//! The Payment aggregate: one guest payment from checkout to its final refund.
//!
//! Stripe delivers webhooks at least once and in no particular order, so every Stripe fact
//! is handled so that the final state does not depend on the order of arrival:
//!
//! - the status is a function of a few monotonic facts (money received, cumulative refunds,
//!   closed, authorized, failed), see [`StatusFacts`];
//! - money facts are never dropped: a success after a failure, cancellation or expiry still
//!   succeeds, and refunds reported before the success are kept and counted once it arrives;
//! - a fact that would move a payment backwards (an older refund total, a failure after the
//!   success, an authorization after the cancellation) is recorded as
//!   `StripeReportIgnored` with the reason, so the audit log shows every report;
//! - a Stripe event id is recorded once: the same event delivered again is ignored.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::commands::{PaymentCommand, RefundSubmissionOutcome, StripeAnswer};
use super::error::PaymentError;
use super::events::{
    AmountMismatchDirection, DisputeUpdate, LockedOffer, PaymentEvent, PaymentKind, PaymentStatus,
    PaymentTarget, StripeEventRef, StripeReport,
};
use super::refunds::{
    refund_idempotency_key, KnownRefund, OrderedRefund, RefundLedger, RefundStatus, RequestState,
};
use super::services::{
    cancel_idempotency_key, capture_idempotency_key, CancelAuthorizationRequest, CaptureRequest,
    PaymentServices, RefundRequest,
};
use crate::{Currency, Money};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Payment {
    checkout: Option<Checkout>,
    status: PaymentStatus,
    checkout_session_id: Option<String>,
    payment_intent_id: Option<String>,
    charge_id: Option<String>,
    authorized: bool,
    amount_capturable_minor: i64,
    /// What we decided to capture (`PaymentCaptureOrdered`; for older journals, the
    /// capture Stripe accepted from inside the command).
    capture_ordered_minor: Option<i64>,
    /// Stripe accepted the capture (`PaymentCaptureRequested`).
    capture_requested_minor: Option<i64>,
    /// Stripe refused the capture for good (`PaymentCaptureFailed`): the reason.
    capture_failure: Option<String>,
    /// We decided to release the authorization (`PaymentCancellationOrdered`): why.
    cancellation_ordered: Option<String>,
    /// Stripe accepted the release (`PaymentCancellationRequested`).
    cancellation_requested: bool,
    /// Stripe refused the release (`PaymentCancellationFailed`): the reason.
    cancellation_failure: Option<String>,
    /// Set once Stripe reports the success; `None` means no money was collected yet.
    amount_received_minor: Option<i64>,
    /// Every refund Stripe reported and every refund we asked for (see [`RefundLedger`]).
    refunds: RefundLedger,
    /// `Cancelled` or `Expired` once Stripe closed the payment unpaid.
    closed: Option<PaymentStatus>,
    failed_attempts: u32,
    last_failure_reason: Option<String>,
    succeeded_at: Option<DateTime<Utc>>,
    dispute_ids: BTreeSet<String>,
    /// Per dispute, what it has withdrawn and not reinstated (minor units); a dispute
    /// moves its amount at most once each way, however Stripe reports it.
    #[serde(default)]
    dispute_withdrawn_minor: BTreeMap<String, i64>,
    /// Disputes Stripe closed, with their final status.
    #[serde(default)]
    disputes_closed: BTreeMap<String, String>,
    /// Stripe reported less than expected: the money is kept, but no access is granted
    /// until an operator grants it (or refunds).
    #[serde(default)]
    access_held: bool,
    /// The last amount Stripe reported that was not the expected one, and how.
    #[serde(default)]
    amount_mismatch: Option<AmountMismatch>,
    /// Every Stripe event already handled, so a redelivery is recognised.
    stripe_event_ids: BTreeSet<String>,
}

/// A Stripe amount that was not the expected one, as `PaymentAmountMismatch` recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmountMismatch {
    pub expected: Money,
    pub reported: Money,
    pub direction: AmountMismatchDirection,
    /// The Stripe event that reported it.
    pub stripe_event_id: String,
}

impl AmountMismatch {
    /// For people: `Stripe reported 600 eur, below the expected 1000 eur: …`.
    pub fn describe(&self) -> String {
        let consequence = match self.direction {
            AmountMismatchDirection::Below => {
                "the money is recorded; no access until an admin grants it or refunds"
            }
            AmountMismatchDirection::Above | AmountMismatchDirection::OtherCurrency => {
                "refused and flagged; the payment does not move"
            }
        };
        format!(
            "Stripe reported {}, {} the expected {} (audit amount_mismatch): {consequence}",
            self.reported.major_with_code(),
            match self.direction {
                AmountMismatchDirection::Below => "below",
                AmountMismatchDirection::Above => "above",
                AmountMismatchDirection::OtherCurrency => "in another currency than",
            },
            self.expected.major_with_code()
        )
    }
}

/// What the guest agreed to at checkout. Nothing here changes after `CheckoutStarted`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Checkout {
    payment_id: Uuid,
    target: PaymentTarget,
    price: Money,
    guest_email: String,
    started_at: DateTime<Utc>,
    offer: Option<LockedOffer>,
}

/// The facts the status is derived from. Each only ever moves one way, which is why the
/// same set of Stripe reports gives the same status in any order.
#[derive(Debug, Clone, Copy)]
struct StatusFacts {
    received_minor: Option<i64>,
    refunded_minor: i64,
    closed: Option<PaymentStatus>,
    authorized: bool,
    failed: bool,
}

impl StatusFacts {
    /// Money received outranks everything; an unpaid payment closed by Stripe stays closed;
    /// an authorization outranks a failed attempt (the guest retried with another card).
    fn status(self) -> PaymentStatus {
        if let Some(received_minor) = self.received_minor {
            return match self.refunded_minor {
                0 => PaymentStatus::Succeeded,
                refunded if refunded < received_minor => PaymentStatus::PartiallyRefunded,
                _ => PaymentStatus::Refunded,
            };
        }
        if let Some(closed) = self.closed {
            return closed;
        }
        if self.authorized {
            return PaymentStatus::Authorized;
        }
        if self.failed {
            return PaymentStatus::Failed;
        }
        PaymentStatus::Pending
    }
}

impl Aggregate for Payment {
    const TYPE: &'static str = "Payment";
    type Command = PaymentCommand;
    type Event = PaymentEvent;
    type Error = PaymentError;
    type Services = PaymentServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let events = self.decide(command)?;
        for event in events {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            PaymentEvent::CheckoutStarted {
                payment_id,
                target,
                price,
                guest_email,
                at,
                offer,
            } => {
                self.checkout = Some(Checkout {
                    payment_id,
                    target,
                    price,
                    guest_email,
                    started_at: at,
                    offer,
                });
                self.status = PaymentStatus::Pending;
            }
            PaymentEvent::CheckoutSessionCreated {
                checkout_session_id,
                payment_intent_id,
                ..
            } => {
                self.checkout_session_id = Some(checkout_session_id);
                if payment_intent_id.is_some() {
                    self.payment_intent_id = payment_intent_id;
                }
            }
            PaymentEvent::PaymentAuthorized {
                payment_intent_id,
                amount_capturable,
                status,
                stripe_event,
                ..
            } => {
                self.payment_intent_id = Some(payment_intent_id);
                self.authorized = true;
                self.amount_capturable_minor = amount_capturable.amount_minor;
                self.record_stripe_fact(status, stripe_event);
            }
            PaymentEvent::PaymentFailed {
                payment_intent_id,
                reason,
                attempt,
                status,
                stripe_event,
                ..
            } => {
                self.payment_intent_id = Some(payment_intent_id);
                self.failed_attempts = attempt;
                self.last_failure_reason = Some(reason);
                self.record_stripe_fact(status, stripe_event);
            }
            PaymentEvent::PaymentSucceeded {
                payment_intent_id,
                charge_id,
                amount_received,
                status,
                stripe_event,
                ..
            } => {
                self.payment_intent_id = Some(payment_intent_id);
                if charge_id.is_some() {
                    self.charge_id = charge_id;
                }
                self.amount_received_minor = Some(amount_received.amount_minor);
                self.succeeded_at = Some(stripe_event.created);
                self.record_stripe_fact(status, stripe_event);
            }
            PaymentEvent::DuplicateConfirmationIgnored { stripe_event, .. }
            | PaymentEvent::StripeReportIgnored { stripe_event, .. } => {
                self.stripe_event_ids.insert(stripe_event.id);
            }
            PaymentEvent::RefundRecorded {
                charge_id,
                amount_refunded,
                status,
                stripe_event,
                charge_amount_refunded,
                refund_id,
                refund_request_id,
                ..
            } => {
                self.charge_id = Some(charge_id);
                // A refund report changed the ledger already (`StripeRefundReported`);
                // a charge report, or an old journal's total (all charge reports), is
                // the charge's cumulative total at Stripe's time of the event.
                if refund_id.is_none() {
                    let charge_total =
                        charge_amount_refunded.unwrap_or_else(|| amount_refunded.clone());
                    self.refunds.record_charge_total(
                        charge_total.amount_minor,
                        stripe_event.created,
                        refund_request_id,
                    );
                }
                debug_assert_eq!(self.refunds.refunded_minor(), amount_refunded.amount_minor);
                self.record_stripe_fact(status, stripe_event);
            }
            PaymentEvent::PaymentCaptureRequested {
                amount_to_capture, ..
            } => {
                self.capture_ordered_minor = Some(amount_to_capture.amount_minor);
                self.capture_requested_minor = Some(amount_to_capture.amount_minor);
            }
            PaymentEvent::PaymentCaptureOrdered {
                amount_to_capture, ..
            } => {
                self.capture_ordered_minor = Some(amount_to_capture.amount_minor);
            }
            PaymentEvent::PaymentCaptureFailed { reason, .. } => {
                self.capture_failure = Some(reason);
            }
            PaymentEvent::PaymentCancellationRequested { reason, .. } => {
                self.cancellation_ordered.get_or_insert(reason);
                self.cancellation_requested = true;
            }
            PaymentEvent::PaymentCancellationOrdered { reason, .. } => {
                self.cancellation_ordered = Some(reason);
            }
            PaymentEvent::PaymentCancellationFailed { reason, .. } => {
                self.cancellation_failure = Some(reason);
            }
            PaymentEvent::PaymentCancelled {
                payment_intent_id,
                status,
                stripe_event,
                ..
            } => {
                self.payment_intent_id = Some(payment_intent_id);
                self.closed = Some(PaymentStatus::Cancelled);
                self.record_stripe_fact(status, stripe_event);
            }
            PaymentEvent::CheckoutExpired {
                checkout_session_id,
                status,
                stripe_event,
                ..
            } => {
                self.checkout_session_id = Some(checkout_session_id);
                self.closed = Some(PaymentStatus::Expired);
                self.record_stripe_fact(status, stripe_event);
            }
            PaymentEvent::RefundRequested {
                refund_request_id,
                amount,
                reason,
                stripe_refund_id,
                expected_amount_refunded,
                ..
            } => {
                self.refunds.record_legacy_request(
                    refund_request_id,
                    amount.amount_minor,
                    reason,
                    stripe_refund_id,
                    expected_amount_refunded.amount_minor,
                );
            }
            PaymentEvent::RefundOrdered {
                refund_request_id,
                amount,
                reason,
                asked_for_the_rest,
                ..
            } => {
                let ordered = OrderedRefund {
                    amount_minor: amount.amount_minor,
                    reason,
                    asked_for_the_rest,
                };
                self.refunds.record_request(refund_request_id, ordered);
            }
            PaymentEvent::RefundSubmitted {
                refund_request_id,
                stripe_refund_id,
                ..
            } => {
                self.refunds
                    .record_submission(refund_request_id, stripe_refund_id);
            }
            PaymentEvent::RefundSubmissionFailed {
                refund_request_id, ..
            } => {
                self.refunds.record_refusal(refund_request_id);
            }
            PaymentEvent::StripeRefundReported {
                refund_id,
                charge_id,
                amount,
                refund_status,
                refund_created,
                refund_request_id,
                stripe_event,
                ..
            } => {
                self.charge_id = Some(charge_id);
                self.refunds.record_refund(
                    refund_id,
                    KnownRefund {
                        amount_minor: amount.amount_minor,
                        status: refund_status,
                        reported_at: stripe_event.created,
                        created_at: refund_created,
                        refund_request_id,
                    },
                );
                self.stripe_event_ids.insert(stripe_event.id);
            }
            PaymentEvent::PaymentDisputed {
                dispute_id,
                stripe_event,
                ..
            } => {
                self.dispute_ids.insert(dispute_id);
                self.stripe_event_ids.insert(stripe_event.id);
            }
            PaymentEvent::PaymentAmountMismatch {
                expected,
                reported,
                direction,
                stripe_event,
                ..
            } => {
                if direction == AmountMismatchDirection::Below {
                    self.access_held = true;
                }
                self.amount_mismatch = Some(AmountMismatch {
                    expected,
                    reported,
                    direction,
                    stripe_event_id: stripe_event.id.clone(),
                });
                self.stripe_event_ids.insert(stripe_event.id);
            }
            PaymentEvent::PaymentAccessGranted { .. } => {
                self.access_held = false;
            }
            PaymentEvent::DisputeFundsWithdrawn {
                dispute_id,
                amount,
                stripe_event,
                ..
            } => {
                debug_assert!(amount.is_positive());
                self.dispute_withdrawn_minor
                    .insert(dispute_id, amount.amount_minor);
                self.stripe_event_ids.insert(stripe_event.id);
            }
            PaymentEvent::DisputeFundsReinstated {
                dispute_id,
                stripe_event,
                ..
            } => {
                self.dispute_withdrawn_minor.remove(&dispute_id);
                self.stripe_event_ids.insert(stripe_event.id);
            }
            PaymentEvent::DisputeClosed {
                dispute_id,
                status,
                stripe_event,
                ..
            } => {
                self.disputes_closed.insert(dispute_id, status);
                self.stripe_event_ids.insert(stripe_event.id);
            }
        }
    }
}

/// Read accessors for the application. Tests speak in commands and events instead.
impl Payment {
    pub fn status(&self) -> PaymentStatus {
        self.status
    }

    pub fn is_started(&self) -> bool {
        self.checkout.is_some()
    }

    pub fn payment_id(&self) -> Option<Uuid> {
        self.checkout.as_ref().map(|checkout| checkout.payment_id)
    }

    pub fn target(&self) -> Option<&PaymentTarget> {
        self.checkout.as_ref().map(|checkout| &checkout.target)
    }

    pub fn kind(&self) -> Option<PaymentKind> {
        self.target().map(PaymentTarget::kind)
    }

    /// The offer locked at checkout beyond the price; `None` for payments started before
    /// offers were locked (see [`LockedOffer`] for the fallback).
    pub fn locked_offer(&self) -> Option<&LockedOffer> {
        self.checkout
            .as_ref()
            .and_then(|checkout| checkout.offer.as_ref())
    }

    /// The price locked at checkout (API.md's `amount`).
    pub fn price(&self) -> Option<&Money> {
        self.checkout.as_ref().map(|checkout| &checkout.price)
    }

    pub fn currency(&self) -> Option<&Currency> {
        self.price().map(|price| &price.currency)
    }

    pub fn guest_email(&self) -> Option<&str> {
        self.checkout
            .as_ref()
            .map(|checkout| checkout.guest_email.as_str())
    }

    pub fn started_at(&self) -> Option<DateTime<Utc>> {
        self.checkout.as_ref().map(|checkout| checkout.started_at)
    }

    pub fn checkout_session_id(&self) -> Option<&str> {
        self.checkout_session_id.as_deref()
    }

    pub fn payment_intent_id(&self) -> Option<&str> {
        self.payment_intent_id.as_deref()
    }

    pub fn charge_id(&self) -> Option<&str> {
        self.charge_id.as_deref()
    }

    pub fn amount_capturable(&self) -> Option<Money> {
        self.money(self.amount_capturable_minor)
    }

    /// What Stripe collected; `None` until the success is reported.
    pub fn amount_received(&self) -> Option<Money> {
        self.amount_received_minor
            .and_then(|received| self.money(received))
    }

    /// Stripe's cumulative refunded total.
    pub fn amount_refunded(&self) -> Option<Money> {
        self.money(self.refunds.refunded_minor())
    }

    /// One of our refund requests, as decided.
    pub fn refund_request(&self, refund_request_id: Uuid) -> Option<&RequestState> {
        self.refunds.request(refund_request_id)
    }

    /// Refunds requested and not yet accounted for by Stripe.
    pub fn refund_in_flight(&self) -> Option<Money> {
        self.money(self.refunds.in_flight_minor())
    }

    /// What the refund job must send Stripe for `refund_request_id`, or `None` when the
    /// request is unknown or Stripe already answered it.
    pub fn refund_submission(&self, refund_request_id: Uuid) -> Option<RefundRequest> {
        if !self.refunds.awaits_submission(refund_request_id) {
            return None;
        }
        let request = self.refunds.request(refund_request_id)?;
        Some(RefundRequest {
            payment_intent_id: self.payment_intent_id.clone()?,
            amount: self.money(request.amount_minor)?,
            reason: request.reason.clone(),
            idempotency_key: refund_idempotency_key(refund_request_id),
            payment_id: self.payment_id()?,
            refund_request_id,
        })
    }

    /// What the capture job must send Stripe, or `None` when no capture was ordered or
    /// Stripe already answered it (or reported the money collected).
    pub fn capture_submission(&self) -> Option<CaptureRequest> {
        let ordered_minor = self.capture_ordered_minor?;
        let answered = self.capture_requested_minor.is_some() || self.capture_failure.is_some();
        if answered || self.amount_received_minor.is_some() {
            return None;
        }
        Some(CaptureRequest {
            payment_intent_id: self.payment_intent_id.clone()?,
            amount_to_capture: self.money(ordered_minor)?,
            idempotency_key: capture_idempotency_key(self.payment_id()?),
        })
    }

    /// What the cancellation job must send Stripe, or `None` when no release was ordered,
    /// Stripe already answered it, or the payment is closed already (Stripe cancelled it).
    pub fn cancellation_submission(&self) -> Option<CancelAuthorizationRequest> {
        let reason = self.cancellation_ordered.as_ref()?;
        let answered = self.cancellation_requested || self.cancellation_failure.is_some();
        if answered || self.closed.is_some() {
            return None;
        }
        if self.amount_received_minor.is_some() {
            return None;
        }
        Some(CancelAuthorizationRequest {
            payment_intent_id: self.payment_intent_id.clone()?,
            reason: reason.clone(),
            idempotency_key: cancel_idempotency_key(self.payment_id()?),
        })
    }

    /// Why Stripe refused our capture, once it did.
    pub fn capture_failure(&self) -> Option<&str> {
        self.capture_failure.as_deref()
    }

    /// Whether a capture was decided (whatever Stripe answered since).
    pub fn capture_ordered(&self) -> bool {
        self.capture_ordered_minor.is_some()
    }

    /// Whether the release of the authorization was decided.
    pub fn cancellation_ordered(&self) -> bool {
        self.cancellation_ordered.is_some()
    }

    /// Why Stripe refused to release the authorization, once it did.
    pub fn cancellation_failure(&self) -> Option<&str> {
        self.cancellation_failure.as_deref()
    }

    /// Whether Stripe ever held funds for this payment (manual capture).
    pub fn was_authorized(&self) -> bool {
        self.authorized
    }

    /// Whether a device session may start (or keep its place) on this payment: the money
    /// was collected, or the authorization can still be captured — held, with no
    /// release decided and no capture refused.
    pub fn can_start_session(&self) -> bool {
        match self.status {
            PaymentStatus::Succeeded | PaymentStatus::PartiallyRefunded => true,
            PaymentStatus::Authorized => {
                self.cancellation_ordered.is_none() && self.capture_failure.is_none()
            }
            _ => false,
        }
    }

    /// What a new refund request may still ask for.
    pub fn refundable(&self) -> Option<Money> {
        self.money(self.refundable_minor())
    }

    pub fn succeeded_at(&self) -> Option<DateTime<Utc>> {
        self.succeeded_at
    }

    pub fn is_disputed(&self) -> bool {
        !self.dispute_ids.is_empty()
    }

    /// Stripe reported less than expected and no operator has granted access yet: no
    /// door code is issued and no session is started for this payment.
    pub fn is_access_held(&self) -> bool {
        self.access_held
    }

    /// How the last Stripe amount that was not the expected one differed, if one was.
    pub fn amount_mismatch(&self) -> Option<&AmountMismatch> {
        self.amount_mismatch.as_ref()
    }

    pub fn failed_attempts(&self) -> u32 {
        self.failed_attempts
    }

    pub fn last_failure_reason(&self) -> Option<&str> {
        self.last_failure_reason.as_deref()
    }

    fn money(&self, amount_minor: i64) -> Option<Money> {
        self.price().map(|price| price.with_amount(amount_minor))
    }

    fn refundable_minor(&self) -> i64 {
        self.refunds
            .refundable_minor(self.amount_received_minor.unwrap_or(0))
    }

    fn record_stripe_fact(&mut self, status: PaymentStatus, stripe_event: StripeEventRef) {
        self.status = status;
        self.stripe_event_ids.insert(stripe_event.id);
    }

    fn status_facts(&self) -> StatusFacts {
        StatusFacts {
            received_minor: self.amount_received_minor,
            refunded_minor: self.refunds.refunded_minor(),
            closed: self.closed,
            authorized: self.authorized,
            failed: self.failed_attempts > 0,
        }
    }
}

/// Deciding: every rule lives here; `apply` above only records what was decided.
impl Payment {
    /// Every Stripe call is made by a job outside `handle` (the workflows' capture,
    /// cancellation and refund jobs), so deciding needs no services.
    fn decide(&self, command: PaymentCommand) -> Result<Vec<PaymentEvent>, PaymentError> {
        match command {
            PaymentCommand::StartCheckout {
                payment_id,
                target,
                price,
                guest_email,
                at,
                offer,
                ..
            } => self.start_checkout(Checkout {
                payment_id,
                target,
                price,
                guest_email,
                started_at: at,
                offer: offer.map(|offer| *offer),
            }),
            PaymentCommand::RecordCheckoutSession {
                checkout_session_id,
                payment_intent_id,
                expires_at,
                at,
                ..
            } => {
                self.record_checkout_session(checkout_session_id, payment_intent_id, expires_at, at)
            }
            PaymentCommand::RecordAuthorization {
                payment_intent_id,
                amount_capturable,
                stripe_event,
                at,
                ..
            } => self.record_authorization(payment_intent_id, amount_capturable, stripe_event, at),
            PaymentCommand::RecordFailure {
                payment_intent_id,
                reason,
                stripe_event,
                at,
                ..
            } => self.record_failure(payment_intent_id, reason, stripe_event, at),
            PaymentCommand::ConfirmPayment {
                payment_intent_id,
                charge_id,
                amount_received,
                stripe_event,
                at,
                ..
            } => self.confirm(
                payment_intent_id,
                charge_id,
                amount_received,
                stripe_event,
                at,
            ),
            PaymentCommand::RecordRefund {
                payment_intent_id,
                charge_id,
                amount_refunded,
                refund_request_id,
                stripe_event,
                at,
                ..
            } => self.record_refund(ChargeRefundReport {
                payment_intent_id,
                charge_id,
                amount_refunded,
                refund_request_id,
                stripe_event,
                at,
            }),
            PaymentCommand::RecordRefundUpdate {
                refund_id,
                charge_id,
                payment_intent_id,
                amount,
                refund_status,
                refund_created,
                refund_request_id,
                failure_reason,
                stripe_event,
                at,
                ..
            } => self.record_refund_update(RefundReport {
                refund_id,
                charge_id,
                payment_intent_id,
                amount,
                refund_status,
                refund_created,
                refund_request_id,
                failure_reason,
                stripe_event,
                at,
            }),
            PaymentCommand::RecordRefundSubmission {
                refund_request_id,
                outcome,
                at,
                ..
            } => self.record_refund_submission(refund_request_id, outcome, at),
            PaymentCommand::RecordCancellation {
                payment_intent_id,
                cancellation_reason,
                stripe_event,
                at,
                ..
            } => self.record_cancellation(payment_intent_id, cancellation_reason, stripe_event, at),
            PaymentCommand::RecordCheckoutExpired {
                checkout_session_id,
                stripe_event,
                at,
                ..
            } => self.record_checkout_expired(checkout_session_id, stripe_event, at),
            PaymentCommand::RecordDispute {
                dispute_id,
                amount,
                reason,
                stripe_event,
                at,
                ..
            } => self.record_dispute(dispute_id, amount, reason, stripe_event, at),
            PaymentCommand::RecordDisputeUpdate {
                dispute_id,
                amount,
                update,
                stripe_event,
                at,
                ..
            } => self.record_dispute_update(dispute_id, amount, update, stripe_event, at),
            PaymentCommand::GrantAccess { reason, actor, at } => {
                self.grant_access(reason, actor, at)
            }
            PaymentCommand::CapturePayment {
                amount_to_capture,
                actor,
                at,
            } => self.capture(amount_to_capture, actor, at),
            PaymentCommand::CancelAuthorization { reason, actor, at } => {
                self.cancel_authorization(reason, actor, at)
            }
            PaymentCommand::RecordCaptureSubmission { outcome, at, .. } => {
                self.record_capture_submission(outcome, at)
            }
            PaymentCommand::RecordCancellationSubmission { outcome, at, .. } => {
                self.record_cancellation_submission(outcome, at)
            }
            PaymentCommand::RequestRefund {
                refund_request_id,
                amount,
                reason,
                actor,
                at,
            } => {
                let request = RefundDecision {
                    refund_request_id,
                    amount,
                    reason,
                    actor,
                    at,
                };
                self.request_refund(request)
            }
        }
    }

    fn start_checkout(&self, requested: Checkout) -> Result<Vec<PaymentEvent>, PaymentError> {
        if let Some(existing) = &self.checkout {
            // The same request sent twice (a retried POST) changes nothing; anything else
            // would alter a locked price, so it is refused.
            let same = existing.payment_id == requested.payment_id
                && existing.target == requested.target
                && existing.price == requested.price
                && existing.guest_email == requested.guest_email
                && existing.offer == requested.offer;
            if same {
                return Ok(vec![]);
            }
            return Err(PaymentError::AlreadyStarted {
                price: existing.price.clone(),
                target: existing.target.to_string(),
            });
        }
        validate_checkout(&requested)?;
        Ok(vec![PaymentEvent::CheckoutStarted {
            payment_id: requested.payment_id,
            target: requested.target,
            price: requested.price,
            guest_email: requested.guest_email,
            at: requested.started_at,
            offer: requested.offer,
        }])
    }

    fn record_checkout_session(
        &self,
        checkout_session_id: String,
        payment_intent_id: Option<String>,
        expires_at: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    ) -> Result<Vec<PaymentEvent>, PaymentError> {
        self.started()?;
        self.check_checkout_session(&checkout_session_id)?;
        if let Some(reported) = &payment_intent_id {
            self.check_payment_intent(reported)?;
        }
        let nothing_new = self.checkout_session_id.is_some()
            && (payment_intent_id.is_none() || self.payment_intent_id.is_some());
        if nothing_new {
            return Ok(vec![]);
        }
        Ok(vec![PaymentEvent::CheckoutSessionCreated {
            checkout_session_id,
            payment_intent_id,
            expires_at,
            at,
        }])
    }

    fn record_authorization(
        &self,
        payment_intent_id: String,
        amount_capturable: Money,
        stripe_event: StripeEventRef,
        at: DateTime<Utc>,
    ) -> Result<Vec<PaymentEvent>, PaymentError> {
        let checkout = self.started()?;
        self.check_payment_intent(&payment_intent_id)?;
        let report = StripeReport::Authorization;
        if let Some(ignored) = self.already_recorded(report, &stripe_event, at) {
            return Ok(ignored);
        }
        let mismatch = amount_mismatch(&checkout.price, &checkout.price, &amount_capturable)?;
        let mismatch_event = |direction| PaymentEvent::PaymentAmountMismatch {
            expected: checkout.price.clone(),
            reported: amount_capturable.clone(),
            direction,
            report,
            stripe_event: stripe_event.clone(),
            at,
        };
        if let Some(
            direction @ (AmountMismatchDirection::Above | AmountMismatchDirection::OtherCurrency),
        ) = mismatch
        {
            return Ok(vec![mismatch_event(direction)]);
        }
        let stale_reason = if self.amount_received_minor.is_some() {
            Some(format!("payment is already {}", self.status))
        } else if let Some(closed) = self.closed {
            Some(format!(
                "payment is already {closed}; an authorization never reopens it"
            ))
        } else if self.authorized {
            Some("payment is already authorized".to_owned())
        } else {
            None
        };
        if let Some(reason) = stale_reason {
            return Ok(ignore(report, reason, stripe_event, at));
        }
        let status = StatusFacts {
            authorized: true,
            ..self.status_facts()
        }
        .status();
        let held = mismatch.map(mismatch_event);
        let mut events = vec![PaymentEvent::PaymentAuthorized {
            payment_intent_id,
            amount_capturable,
            status,
            stripe_event,
            at,
        }];
        events.extend(held);
        Ok(events)
    }

    fn record_failure(
        &self,
        payment_intent_id: String,
        reason: String,
        stripe_event: StripeEventRef,
        at: DateTime<Utc>,
    ) -> Result<Vec<PaymentEvent>, PaymentError> {
        self.started()?;
        self.check_payment_intent(&payment_intent_id)?;
        let report = StripeReport::Failure;
        if let Some(ignored) = self.already_recorded(report, &stripe_event, at) {
            return Ok(ignored);
        }
        if let Some(succeeded_at) = self.succeeded_at {
            // A PaymentIntent that succeeded can no longer fail, so a failure is either an
            // earlier attempt delivered late or a contradiction; neither undoes money received.
            let reason = if stripe_event.created <= succeeded_at {
                format!("failure created at {} precedes the success at {succeeded_at}; a succeeded payment is never downgraded", stripe_event.created)
            } else {
                format!("failure created at {} after the success at {succeeded_at}; a succeeded payment is never downgraded", stripe_event.created)
            };
            return Ok(ignore(report, reason, stripe_event, at));
        }
        let stale_reason = if let Some(closed) = self.closed {
            Some(format!("payment is already {closed}"))
        } else if self.authorized {
            Some(
                "payment is already authorized; an earlier failed attempt does not undo it"
                    .to_owned(),
            )
        } else {
            None
        };
        if let Some(ignore_reason) = stale_reason {
            return Ok(ignore(report, ignore_reason, stripe_event, at));
        }
        let status = StatusFacts {
            failed: true,
            ..self.status_facts()
        }
        .status();
        Ok(vec![PaymentEvent::PaymentFailed {
            payment_intent_id,
            reason,
            attempt: self.failed_attempts + 1,
            status,
            stripe_event,
            at,
        }])
    }

    fn confirm(
        &self,
        payment_intent_id: String,
        charge_id: Option<String>,
        amount_received: Money,
        stripe_event: StripeEventRef,
        at: DateTime<Utc>,
    ) -> Result<Vec<PaymentEvent>, PaymentError> {
        let checkout = self.started()?;
        self.check_payment_intent(&payment_intent_id)?;
        if let Some(reported) = &charge_id {
            self.check_charge(reported)?;
        }
        if let Some(received_minor) = self.amount_received_minor {
            check_currency(&checkout.price, &amount_received)?;
            if received_minor != amount_received.amount_minor {
                return Err(PaymentError::ConfirmationAmountMismatch {
                    recorded: checkout.price.with_amount(received_minor),
                    reported: amount_received,
                });
            }
            return Ok(vec![PaymentEvent::DuplicateConfirmationIgnored {
                payment_intent_id,
                stripe_event,
                at,
            }]);
        }
        // A success we refused (too much, another currency) is known by its event id.
        let report = StripeReport::Success;
        if let Some(ignored) = self.already_recorded(report, &stripe_event, at) {
            return Ok(ignored);
        }
        // After a partial capture less than the price is expected: what we asked for.
        let expected = checkout.price.with_amount(
            self.capture_requested_minor
                .unwrap_or(checkout.price.amount_minor),
        );
        let mismatch = amount_mismatch(&checkout.price, &expected, &amount_received)?;
        let mismatch_event = |direction| PaymentEvent::PaymentAmountMismatch {
            expected: expected.clone(),
            reported: amount_received.clone(),
            direction,
            report,
            stripe_event: stripe_event.clone(),
            at,
        };
        if let Some(
            direction @ (AmountMismatchDirection::Above | AmountMismatchDirection::OtherCurrency),
        ) = mismatch
        {
            return Ok(vec![mismatch_event(direction)]);
        }
        let refunded_minor = self.refunds.refunded_minor();
        if amount_received.amount_minor < refunded_minor {
            return Err(PaymentError::ReceivedBelowRefunded {
                refunded: checkout.price.with_amount(refunded_minor),
                received: amount_received,
            });
        }
        let status = StatusFacts {
            received_minor: Some(amount_received.amount_minor),
            ..self.status_facts()
        }
        .status();
        let held = mismatch.map(mismatch_event);
        let mut events = vec![PaymentEvent::PaymentSucceeded {
            payment_intent_id,
            charge_id,
            amount_received,
            status,
            stripe_event,
            at,
        }];
        events.extend(held);
        Ok(events)
    }

    /// `charge.refunded`: the charge's cumulative total, possibly naming our request.
    fn record_refund(&self, report: ChargeRefundReport) -> Result<Vec<PaymentEvent>, PaymentError> {
        let checkout = self.started()?;
        check_currency(&checkout.price, &report.amount_refunded)?;
        if let Some(reported) = &report.payment_intent_id {
            self.check_payment_intent(reported)?;
        }
        self.check_charge(&report.charge_id)?;
        let kind = StripeReport::Refund;
        if let Some(ignored) = self.already_recorded(kind, &report.stripe_event, report.at) {
            return Ok(ignored);
        }
        self.check_refund_limit(&report.amount_refunded)?;
        let names_request_in_flight = report
            .refund_request_id
            .is_some_and(|id| self.refunds.is_request_in_flight(id));
        let mut after = self.refunds.clone();
        after.record_charge_total(
            report.amount_refunded.amount_minor,
            report.stripe_event.created,
            report.refund_request_id,
        );
        // A total the refunds known by id already explain is no news (the charge report
        // of a refund whose `refund.created` came first), unless it accounts for one of
        // our requests still reserved.
        let news =
            after.refunded_minor() != self.refunds.refunded_minor() || names_request_in_flight;
        if !news {
            let reason = format!(
                "Stripe reported {} refunded in total, not above the {} already recorded; an older report never lowers the total",
                report.amount_refunded,
                checkout.price.with_amount(self.refunds.refunded_minor())
            );
            return Ok(ignore(kind, reason, report.stripe_event, report.at));
        }
        let refund_request_id = report.refund_request_id;
        let charge_amount_refunded = Some(report.amount_refunded.clone());
        Ok(vec![self.refund_total_changed(
            &checkout.price,
            &after,
            report.charge_id,
            RefundTotalSource {
                charge_amount_refunded,
                refund_id: None,
                refund_request_id,
            },
            report.stripe_event,
            report.at,
        )])
    }

    /// `refund.created` / `refund.updated` / `refund.failed`: one refund's state, counted
    /// by its id, so a refund reported many ways is counted once and a failure uncounts it.
    fn record_refund_update(
        &self,
        report: RefundReport,
    ) -> Result<Vec<PaymentEvent>, PaymentError> {
        let checkout = self.started()?;
        check_currency(&checkout.price, &report.amount)?;
        if let Some(reported) = &report.payment_intent_id {
            self.check_payment_intent(reported)?;
        }
        self.check_charge(&report.charge_id)?;
        let kind = StripeReport::Refund;
        if let Some(ignored) = self.already_recorded(kind, &report.stripe_event, report.at) {
            return Ok(ignored);
        }
        if let Some(reason) = self.refunds.refund_report_is_stale(
            &report.refund_id,
            report.refund_status,
            report.stripe_event.created,
        ) {
            return Ok(ignore(kind, reason, report.stripe_event, report.at));
        }
        let mut after = self.refunds.clone();
        after.record_refund(
            report.refund_id.clone(),
            KnownRefund {
                amount_minor: report.amount.amount_minor,
                status: report.refund_status,
                reported_at: report.stripe_event.created,
                created_at: report.refund_created,
                refund_request_id: report.refund_request_id,
            },
        );
        self.check_refund_limit(&checkout.price.with_amount(after.refunded_minor()))?;
        let mut events = vec![PaymentEvent::StripeRefundReported {
            refund_id: report.refund_id.clone(),
            charge_id: report.charge_id.clone(),
            amount: report.amount,
            refund_status: report.refund_status,
            refund_created: report.refund_created,
            refund_request_id: report.refund_request_id,
            failure_reason: report.failure_reason,
            stripe_event: report.stripe_event.clone(),
            at: report.at,
        }];
        if after.refunded_minor() != self.refunds.refunded_minor() {
            events.push(self.refund_total_changed(
                &checkout.price,
                &after,
                report.charge_id,
                RefundTotalSource {
                    refund_id: Some(report.refund_id),
                    ..RefundTotalSource::default()
                },
                report.stripe_event,
                report.at,
            ));
        }
        Ok(events)
    }

    /// Refunded totals above what was received (or, before the success is known, the
    /// locked price) mean the Stripe history is inconsistent: refused, never recorded.
    fn check_refund_limit(&self, total: &Money) -> Result<(), PaymentError> {
        let checkout = self.started()?;
        let limit_minor = self
            .amount_received_minor
            .unwrap_or(checkout.price.amount_minor);
        if total.amount_minor > limit_minor {
            return Err(PaymentError::RefundExceedsAmountReceived {
                limit: checkout.price.with_amount(limit_minor),
                reported: total.clone(),
            });
        }
        Ok(())
    }

    /// The `RefundRecorded` that moves the total from the current ledger's to `after`'s.
    fn refund_total_changed(
        &self,
        price: &Money,
        after: &RefundLedger,
        charge_id: String,
        source: RefundTotalSource,
        stripe_event: StripeEventRef,
        at: DateTime<Utc>,
    ) -> PaymentEvent {
        let total_minor = after.refunded_minor();
        let status = StatusFacts {
            refunded_minor: total_minor,
            ..self.status_facts()
        }
        .status();
        PaymentEvent::RefundRecorded {
            charge_id,
            amount_refunded: price.with_amount(total_minor),
            refunded_increase: price.with_amount(total_minor - self.refunds.refunded_minor()),
            status,
            stripe_event,
            at,
            charge_amount_refunded: source.charge_amount_refunded,
            refund_id: source.refund_id,
            refund_request_id: source.refund_request_id,
        }
    }

    /// Records Stripe's answer to one of our refund requests. A second answer for the same
    /// request (the job retried after a crash; Stripe replayed) changes nothing.
    fn record_refund_submission(
        &self,
        refund_request_id: Uuid,
        outcome: RefundSubmissionOutcome,
        at: DateTime<Utc>,
    ) -> Result<Vec<PaymentEvent>, PaymentError> {
        let checkout = self.started()?;
        if self.refunds.request(refund_request_id).is_none() {
            return Err(PaymentError::UnknownRefundRequest { refund_request_id });
        }
        if !self.refunds.awaits_submission(refund_request_id) {
            return Ok(vec![]);
        }
        let event = match outcome {
            RefundSubmissionOutcome::Accepted {
                stripe_refund_id,
                amount,
                refund_status,
            } => {
                check_currency(&checkout.price, &amount)?;
                PaymentEvent::RefundSubmitted {
                    refund_request_id,
                    stripe_refund_id,
                    amount,
                    refund_status,
                    at,
                }
            }
            RefundSubmissionOutcome::Refused { reason } => PaymentEvent::RefundSubmissionFailed {
                refund_request_id,
                reason,
                at,
            },
        };
        Ok(vec![event])
    }

    fn record_cancellation(
        &self,
        payment_intent_id: String,
        cancellation_reason: Option<String>,
        stripe_event: StripeEventRef,
        at: DateTime<Utc>,
    ) -> Result<Vec<PaymentEvent>, PaymentError> {
        self.started()?;
        self.check_payment_intent(&payment_intent_id)?;
        let report = StripeReport::Cancellation;
        if let Some(ignored) = self.already_recorded(report, &stripe_event, at) {
            return Ok(ignored);
        }
        if let Some(reason) = self.closing_refused_because() {
            return Ok(ignore(report, reason, stripe_event, at));
        }
        let status = StatusFacts {
            closed: Some(PaymentStatus::Cancelled),
            ..self.status_facts()
        }
        .status();
        Ok(vec![PaymentEvent::PaymentCancelled {
            payment_intent_id,
            cancellation_reason,
            status,
            stripe_event,
            at,
        }])
    }

    fn record_checkout_expired(
        &self,
        checkout_session_id: String,
        stripe_event: StripeEventRef,
        at: DateTime<Utc>,
    ) -> Result<Vec<PaymentEvent>, PaymentError> {
        self.started()?;
        self.check_checkout_session(&checkout_session_id)?;
        let report = StripeReport::CheckoutExpiry;
        if let Some(ignored) = self.already_recorded(report, &stripe_event, at) {
            return Ok(ignored);
        }
        // Expiry outranks cancellation: Stripe cancels the PaymentIntent of an abandoned
        // checkout too, and "expired" is the better explanation whichever arrives first.
        let refusal = match self.closed {
            Some(PaymentStatus::Cancelled) if self.amount_received_minor.is_none() => None,
            _ => self.closing_refused_because(),
        };
        if let Some(reason) = refusal {
            return Ok(ignore(report, reason, stripe_event, at));
        }
        let status = StatusFacts {
            closed: Some(PaymentStatus::Expired),
            ..self.status_facts()
        }
        .status();
        Ok(vec![PaymentEvent::CheckoutExpired {
            checkout_session_id,
            status,
            stripe_event,
            at,
        }])
    }

    fn record_dispute(
        &self,
        dispute_id: String,
        amount: Money,
        reason: String,
        stripe_event: StripeEventRef,
        at: DateTime<Utc>,
    ) -> Result<Vec<PaymentEvent>, PaymentError> {
        let checkout = self.started()?;
        check_currency(&checkout.price, &amount)?;
        let report = StripeReport::Dispute;
        if let Some(ignored) = self.already_recorded(report, &stripe_event, at) {
            return Ok(ignored);
        }
        if self.dispute_ids.contains(&dispute_id) {
            let reason = format!("dispute {dispute_id} is already recorded");
            return Ok(ignore(report, reason, stripe_event, at));
        }
        Ok(vec![PaymentEvent::PaymentDisputed {
            dispute_id,
            amount,
            reason,
            stripe_event,
            at,
        }])
    }

    /// A dispute's money movement or outcome. Each dispute withdraws its amount at most
    /// once and reinstates it at most once, whichever of `funds_withdrawn`,
    /// `funds_reinstated` and `closed` report it and in whatever order they arrive.
    fn record_dispute_update(
        &self,
        dispute_id: String,
        amount: Money,
        update: DisputeUpdate,
        stripe_event: StripeEventRef,
        at: DateTime<Utc>,
    ) -> Result<Vec<PaymentEvent>, PaymentError> {
        let checkout = self.started()?;
        check_currency(&checkout.price, &amount)?;
        let report = StripeReport::Dispute;
        if let Some(ignored) = self.already_recorded(report, &stripe_event, at) {
            return Ok(ignored);
        }
        let withdrawn_minor = self.dispute_withdrawn_minor.get(&dispute_id).copied();
        let closed = self.disputes_closed.get(&dispute_id);
        let withdraw = PaymentEvent::DisputeFundsWithdrawn {
            dispute_id: dispute_id.clone(),
            amount: amount.clone(),
            stripe_event: stripe_event.clone(),
            at,
        };
        let reinstate = |withdrawn_minor: i64| PaymentEvent::DisputeFundsReinstated {
            dispute_id: dispute_id.clone(),
            amount: checkout.price.with_amount(withdrawn_minor),
            stripe_event: stripe_event.clone(),
            at,
        };
        let events = match (update, withdrawn_minor, closed) {
            (DisputeUpdate::Closed { .. }, _, Some(status)) => {
                let reason = format!("dispute {dispute_id} is already closed ({status})");
                return Ok(ignore(report, reason, stripe_event, at));
            }
            (DisputeUpdate::Closed { status }, withdrawn_minor, None) => {
                let mut events = match (status.as_str(), withdrawn_minor) {
                    ("lost", None) if amount.is_positive() => vec![withdraw],
                    ("won", Some(withdrawn_minor)) => vec![reinstate(withdrawn_minor)],
                    _ => vec![],
                };
                events.push(PaymentEvent::DisputeClosed {
                    dispute_id: dispute_id.clone(),
                    status,
                    stripe_event: stripe_event.clone(),
                    at,
                });
                events
            }
            (DisputeUpdate::FundsWithdrawn, None, None) if amount.is_positive() => vec![withdraw],
            (DisputeUpdate::FundsReinstated, Some(withdrawn_minor), _) => {
                vec![reinstate(withdrawn_minor)]
            }
            (update, withdrawn_minor, closed) => {
                let reason = format!(
                    "dispute {dispute_id}: {update:?} changes nothing (withdrawn {}, closed {})",
                    checkout.price.with_amount(withdrawn_minor.unwrap_or(0)),
                    closed.map_or("no", String::as_str)
                );
                return Ok(ignore(report, reason, stripe_event, at));
            }
        };
        Ok(events)
    }

    /// An operator grants the access a held (underpaid) payment did not get. Granting
    /// twice changes nothing; a payment that is not held, or was refunded in full, has
    /// nothing to grant.
    fn grant_access(
        &self,
        reason: String,
        actor: crate::Actor,
        at: DateTime<Utc>,
    ) -> Result<Vec<PaymentEvent>, PaymentError> {
        self.started()?;
        let refundable_status = matches!(
            self.status,
            PaymentStatus::Succeeded | PaymentStatus::PartiallyRefunded | PaymentStatus::Authorized
        );
        if !self.access_held || !refundable_status {
            return Err(PaymentError::AccessNotHeld {
                status: self.status,
            });
        }
        Ok(vec![PaymentEvent::PaymentAccessGranted {
            reason,
            actor,
            at,
        }])
    }

    /// Journals the decision to capture; no Stripe call here (the capture job makes it),
    /// so a re-run of this command after a concurrency conflict cannot capture twice.
    fn capture(
        &self,
        amount_to_capture: Option<Money>,
        actor: crate::Actor,
        at: DateTime<Utc>,
    ) -> Result<Vec<PaymentEvent>, PaymentError> {
        let checkout = self.started()?;
        let capturable = checkout.price.with_amount(self.amount_capturable_minor);
        let amount = amount_to_capture.unwrap_or_else(|| capturable.clone());
        if let Some(ordered_minor) = self.capture_ordered_minor {
            if ordered_minor == amount.amount_minor {
                return Ok(vec![]);
            }
            return Err(PaymentError::CaptureAlreadyRequested {
                requested: checkout.price.with_amount(ordered_minor),
            });
        }
        let (PaymentStatus::Authorized, Some(payment_intent_id)) =
            (self.status, self.payment_intent_id.clone())
        else {
            return Err(PaymentError::NotCapturable {
                status: self.status,
            });
        };
        if self.cancellation_ordered.is_some() {
            return Err(PaymentError::ReleaseAlreadyOrdered);
        }
        check_currency(&checkout.price, &amount)?;
        if !amount.is_positive() {
            return Err(PaymentError::NonPositiveAmount { amount });
        }
        if amount.amount_minor > capturable.amount_minor {
            return Err(PaymentError::CaptureExceedsAuthorization {
                requested: amount,
                capturable,
            });
        }
        Ok(vec![PaymentEvent::PaymentCaptureOrdered {
            payment_intent_id,
            amount_to_capture: amount,
            actor,
            at,
        }])
    }

    /// Journals the decision to release the authorization; the cancellation job asks
    /// Stripe. A capture Stripe refused does not prevent it: the hold is then released.
    fn cancel_authorization(
        &self,
        reason: String,
        actor: crate::Actor,
        at: DateTime<Utc>,
    ) -> Result<Vec<PaymentEvent>, PaymentError> {
        let checkout = self.started()?;
        if self.cancellation_ordered.is_some() {
            return Ok(vec![]);
        }
        let (PaymentStatus::Authorized, Some(payment_intent_id)) =
            (self.status, self.payment_intent_id.clone())
        else {
            return Err(PaymentError::NotCancellable {
                status: self.status,
            });
        };
        if let Some(ordered_minor) = self.capture_ordered_minor {
            if self.capture_failure.is_none() {
                return Err(PaymentError::CaptureAlreadyRequested {
                    requested: checkout.price.with_amount(ordered_minor),
                });
            }
        }
        Ok(vec![PaymentEvent::PaymentCancellationOrdered {
            payment_intent_id,
            reason,
            actor,
            at,
        }])
    }

    /// Records Stripe's answer to our capture. A second answer (the job re-ran after a
    /// crash; Stripe replayed its first) changes nothing.
    fn record_capture_submission(
        &self,
        outcome: StripeAnswer,
        at: DateTime<Utc>,
    ) -> Result<Vec<PaymentEvent>, PaymentError> {
        let checkout = self.started()?;
        let Some(ordered_minor) = self.capture_ordered_minor else {
            return Err(PaymentError::NothingOrdered {
                operation: "capture",
            });
        };
        let answered = self.capture_requested_minor.is_some() || self.capture_failure.is_some();
        let Some(payment_intent_id) = self.payment_intent_id.clone() else {
            return Err(PaymentError::NotCapturable {
                status: self.status,
            });
        };
        if answered {
            return Ok(vec![]);
        }
        let event = match outcome {
            StripeAnswer::Accepted => PaymentEvent::PaymentCaptureRequested {
                payment_intent_id,
                amount_to_capture: checkout.price.with_amount(ordered_minor),
                at,
            },
            // Money Stripe reported collected outranks a refusal (a replay of an old
            // answer cannot undo a capture that happened).
            StripeAnswer::Refused { .. } if self.amount_received_minor.is_some() => {
                return Ok(vec![])
            }
            StripeAnswer::Refused { reason } => PaymentEvent::PaymentCaptureFailed {
                payment_intent_id,
                reason,
                at,
            },
        };
        Ok(vec![event])
    }

    /// Records Stripe's answer to our release of the authorization; a second answer
    /// changes nothing.
    fn record_cancellation_submission(
        &self,
        outcome: StripeAnswer,
        at: DateTime<Utc>,
    ) -> Result<Vec<PaymentEvent>, PaymentError> {
        self.started()?;
        let Some(ordered_reason) = self.cancellation_ordered.clone() else {
            return Err(PaymentError::NothingOrdered {
                operation: "release of the authorization",
            });
        };
        let Some(payment_intent_id) = self.payment_intent_id.clone() else {
            return Err(PaymentError::NotCancellable {
                status: self.status,
            });
        };
        if self.cancellation_requested || self.cancellation_failure.is_some() {
            return Ok(vec![]);
        }
        let event = match outcome {
            StripeAnswer::Accepted => PaymentEvent::PaymentCancellationRequested {
                payment_intent_id,
                reason: ordered_reason,
                at,
            },
            StripeAnswer::Refused { reason } => PaymentEvent::PaymentCancellationFailed {
                payment_intent_id,
                reason,
                at,
            },
        };
        Ok(vec![event])
    }

    /// Journals the decision to refund; no Stripe call here, so a re-run of this command
    /// after a concurrency conflict decides again on fresh state and cannot count twice.
    fn request_refund(&self, request: RefundDecision) -> Result<Vec<PaymentEvent>, PaymentError> {
        let checkout = self.started()?;
        if self.refunds.request(request.refund_request_id).is_some() {
            return Ok(vec![]);
        }
        let refundable_minor = self.refundable_minor();
        // "Refund the rest" when nothing is left (all refunded, or the rest is already
        // being refunded) is satisfied, not an error: automatic refunds may race.
        if request.amount.is_none() && refundable_minor == 0 && self.amount_received_minor.is_some()
        {
            return Ok(vec![]);
        }
        let refundable_status = matches!(
            self.status,
            PaymentStatus::Succeeded | PaymentStatus::PartiallyRefunded
        );
        if !refundable_status || self.payment_intent_id.is_none() {
            return Err(PaymentError::NotRefundable {
                status: self.status,
            });
        }
        let refundable = checkout.price.with_amount(refundable_minor);
        let asked_for_the_rest = request.amount.is_none();
        let amount = request.amount.unwrap_or_else(|| refundable.clone());
        check_currency(&checkout.price, &amount)?;
        if !amount.is_positive() {
            return Err(PaymentError::NonPositiveAmount { amount });
        }
        if amount.amount_minor > refundable.amount_minor {
            return Err(PaymentError::RefundExceedsRefundable {
                requested: amount,
                refundable,
            });
        }
        Ok(vec![PaymentEvent::RefundOrdered {
            refund_request_id: request.refund_request_id,
            amount,
            reason: request.reason,
            actor: request.actor,
            at: request.at,
            asked_for_the_rest,
        }])
    }

    fn started(&self) -> Result<&Checkout, PaymentError> {
        self.checkout.as_ref().ok_or(PaymentError::NotStarted)
    }

    /// The first Stripe fact that names a PaymentIntent binds the payment to it.
    fn check_payment_intent(&self, reported: &str) -> Result<(), PaymentError> {
        match &self.payment_intent_id {
            Some(expected) if expected != reported => Err(PaymentError::PaymentIntentMismatch {
                expected: expected.clone(),
                reported: reported.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    fn check_charge(&self, reported: &str) -> Result<(), PaymentError> {
        match &self.charge_id {
            Some(expected) if expected != reported => Err(PaymentError::ChargeMismatch {
                expected: expected.clone(),
                reported: reported.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    fn check_checkout_session(&self, reported: &str) -> Result<(), PaymentError> {
        match &self.checkout_session_id {
            Some(expected) if expected != reported => Err(PaymentError::CheckoutSessionMismatch {
                expected: expected.clone(),
                reported: reported.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    fn already_recorded(
        &self,
        report: StripeReport,
        stripe_event: &StripeEventRef,
        at: DateTime<Utc>,
    ) -> Option<Vec<PaymentEvent>> {
        if !self.stripe_event_ids.contains(&stripe_event.id) {
            return None;
        }
        let reason = format!("Stripe event {} was already recorded", stripe_event.id);
        Some(ignore(report, reason, stripe_event.clone(), at))
    }

    /// Why Stripe closing the payment unpaid cannot apply, if it cannot.
    fn closing_refused_because(&self) -> Option<String> {
        if self.amount_received_minor.is_some() {
            return Some(format!(
                "payment is already {}; money received is never undone by a cancellation or expiry",
                self.status
            ));
        }
        self.closed
            .map(|closed| format!("payment is already {closed}"))
    }
}

/// A `charge.refunded` report's fields.
struct ChargeRefundReport {
    payment_intent_id: Option<String>,
    charge_id: String,
    amount_refunded: Money,
    refund_request_id: Option<Uuid>,
    stripe_event: StripeEventRef,
    at: DateTime<Utc>,
}

/// A `refund.*` report's fields.
struct RefundReport {
    refund_id: String,
    charge_id: String,
    payment_intent_id: Option<String>,
    amount: Money,
    refund_status: RefundStatus,
    refund_created: DateTime<Utc>,
    refund_request_id: Option<Uuid>,
    failure_reason: Option<String>,
    stripe_event: StripeEventRef,
    at: DateTime<Utc>,
}

/// What a `RefundRecorded` says about the report behind it.
#[derive(Default)]
struct RefundTotalSource {
    charge_amount_refunded: Option<Money>,
    refund_id: Option<String>,
    refund_request_id: Option<Uuid>,
}

/// A refund request's parameters, grouped so `request_refund` stays readable.
struct RefundDecision {
    refund_request_id: Uuid,
    amount: Option<Money>,
    reason: String,
    actor: crate::Actor,
    at: DateTime<Utc>,
}

fn ignore(
    report: StripeReport,
    reason: String,
    stripe_event: StripeEventRef,
    at: DateTime<Utc>,
) -> Vec<PaymentEvent> {
    vec![PaymentEvent::StripeReportIgnored {
        report,
        reason,
        stripe_event,
        at,
    }]
}

fn validate_checkout(checkout: &Checkout) -> Result<(), PaymentError> {
    let invalid = |reason: &str| {
        Err(PaymentError::InvalidCheckout {
            reason: reason.to_owned(),
        })
    };
    if !checkout.price.is_positive() {
        return invalid("the price must be positive");
    }
    let email = checkout.guest_email.trim();
    if email.is_empty() || !email.contains('@') {
        return invalid("the guest email must be an email address");
    }
    let target_named = match &checkout.target {
        PaymentTarget::Door { door_uid } => !door_uid.is_empty(),
        PaymentTarget::Device {
            device_uid,
            plan_id,
        } => !device_uid.is_empty() && !plan_id.is_empty(),
    };
    if !target_named {
        return invalid("the door or device (and plan) must be named");
    }
    Ok(())
}

fn check_currency(price: &Money, reported: &Money) -> Result<(), PaymentError> {
    if price.currency != reported.currency {
        return Err(PaymentError::CurrencyMismatch {
            expected: price.currency.clone(),
            reported: reported.currency.clone(),
        });
    }
    Ok(())
}

/// How a Stripe amount differs from `expected` (the price, or the capture we asked for),
/// if it does. A non-positive amount is an inconsistent report, refused as an error.
fn amount_mismatch(
    price: &Money,
    expected: &Money,
    reported: &Money,
) -> Result<Option<AmountMismatchDirection>, PaymentError> {
    if price.currency != reported.currency {
        return Ok(Some(AmountMismatchDirection::OtherCurrency));
    }
    if !reported.is_positive() {
        return Err(PaymentError::NonPositiveAmount {
            amount: reported.clone(),
        });
    }
    Ok(if reported.amount_minor > price.amount_minor {
        Some(AmountMismatchDirection::Above)
    } else if reported.amount_minor < expected.amount_minor {
        Some(AmountMismatchDirection::Below)
    } else {
        None
    })
}
