//! What happened to a payment, and the vocabulary those facts are written in.
//!
//! Every event that can change the status carries `status`, the status *after* it, so a
//! projection never has to re-derive it. Facts reported by Stripe carry the Stripe event
//! (`id` and `created`), which is what lets the audit log tie each change to a webhook.

use std::fmt;

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::refunds::RefundStatus;
use crate::{Actor, Money};

/// What a payment buys: time at a door, or a plan on a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PaymentTarget {
    Door { door_uid: String },
    Device { device_uid: String, plan_id: String },
}

impl PaymentTarget {
    pub fn kind(&self) -> PaymentKind {
        match self {
            Self::Door { .. } => PaymentKind::Door,
            Self::Device { .. } => PaymentKind::Device,
        }
    }
}

impl fmt::Display for PaymentTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Door { door_uid } => write!(f, "door {door_uid}"),
            Self::Device {
                device_uid,
                plan_id,
            } => write!(f, "device {device_uid} (plan {plan_id})"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentKind {
    Door,
    Device,
}

/// What the guest bought, beyond the price, as the catalogue offered it when checkout
/// started (issue 14). Issuing a door code and opening a device session use these values,
/// never the catalogue's current ones, so an edit or a deleted plan between checkout and
/// payment changes nothing the guest paid for.
///
/// Payments started before this existed have no offer (`CheckoutStarted.offer` is
/// absent); for them the workflows fall back to the catalogue's current values — the
/// door's access minutes, the device plan of the same id — and a plan deleted since parks
/// the reaction for an operator instead of guessing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedOffer {
    /// Door: the access minutes; device: the plan's minutes.
    pub minutes: u32,
    /// The door's or device's name as the guest saw it.
    pub target_name: String,
    /// The device plan's name; `None` for a door.
    #[serde(default)]
    pub plan_name: Option<String>,
    /// SHA-256 (hex) over the whole offer — kind, door/device, plan, price, currency,
    /// minutes, names — shown on the guest's page so guest and operator can tell which
    /// offer a payment was for.
    pub hash: String,
}

/// The payment statuses of API.md, spelled the same way in JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    #[default]
    Pending,
    Authorized,
    Succeeded,
    PartiallyRefunded,
    Refunded,
    Failed,
    Cancelled,
    Expired,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Authorized => "authorized",
            Self::Succeeded => "succeeded",
            Self::PartiallyRefunded => "partially_refunded",
            Self::Refunded => "refunded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
        }
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Stripe event a fact came from. `created` is Stripe's clock, not ours: it is what
/// tells an old report from a new one, since Stripe delivers in no particular order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StripeEventRef {
    /// `evt_…`, unique per Stripe event.
    pub id: String,
    pub created: DateTime<Utc>,
}

/// Which kind of Stripe report was ignored, for [`PaymentEvent::StripeReportIgnored`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StripeReport {
    Authorization,
    Failure,
    Refund,
    Cancellation,
    CheckoutExpiry,
    Dispute,
    /// A payment's success (`payment_intent.succeeded` and friends).
    Success,
}

impl fmt::Display for StripeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Self::Authorization => "authorization",
            Self::Failure => "payment failure",
            Self::Refund => "refund",
            Self::Cancellation => "cancellation",
            Self::CheckoutExpiry => "checkout expiry",
            Self::Dispute => "dispute",
            Self::Success => "payment success",
        };
        f.write_str(text)
    }
}

/// How a Stripe amount differs from what the payment expects (the locked price, or the
/// amount we asked to capture).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AmountMismatchDirection {
    /// Less money than expected: recorded, and access is held until an operator grants it
    /// or refunds.
    Below,
    /// More money than the price: refused, never recorded as the payment's money.
    Above,
    /// Another currency: refused, never recorded as the payment's money.
    OtherCurrency,
}

impl AmountMismatchDirection {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Below => "below",
            Self::Above => "above",
            Self::OtherCurrency => "other_currency",
        }
    }
}

impl fmt::Display for AmountMismatchDirection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a dispute did to the money, as Stripe reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisputeUpdate {
    /// `charge.dispute.funds_withdrawn`: the disputed amount left our balance.
    FundsWithdrawn,
    /// `charge.dispute.funds_reinstated`: it came back (the dispute was won).
    FundsReinstated,
    /// `charge.dispute.closed` with Stripe's final `status` (`won`, `lost`,
    /// `warning_closed`, …).
    Closed { status: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum PaymentEvent {
    /// A guest started checkout; the price is locked here for the life of the payment.
    CheckoutStarted {
        payment_id: Uuid,
        target: PaymentTarget,
        price: Money,
        guest_email: String,
        at: DateTime<Utc>,
        /// The rest of the offer; absent in journals written before it was locked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offer: Option<LockedOffer>,
    },
    /// We created the Stripe Checkout Session (and maybe already know its PaymentIntent).
    CheckoutSessionCreated {
        checkout_session_id: String,
        payment_intent_id: Option<String>,
        expires_at: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    },
    /// Stripe holds the funds (manual capture); not revenue yet.
    PaymentAuthorized {
        payment_intent_id: String,
        amount_capturable: Money,
        status: PaymentStatus,
        stripe_event: StripeEventRef,
        at: DateTime<Utc>,
    },
    /// An attempt failed (`payment_intent.payment_failed`); the guest may still retry.
    PaymentFailed {
        payment_intent_id: String,
        reason: String,
        attempt: u32,
        status: PaymentStatus,
        stripe_event: StripeEventRef,
        at: DateTime<Utc>,
    },
    /// Stripe collected `amount_received` (less than the price after a partial capture).
    PaymentSucceeded {
        payment_intent_id: String,
        charge_id: Option<String>,
        amount_received: Money,
        status: PaymentStatus,
        stripe_event: StripeEventRef,
        at: DateTime<Utc>,
    },
    /// The same success was reported again; nothing changed (audit: `duplicate_payment_ignored`).
    DuplicateConfirmationIgnored {
        payment_intent_id: String,
        stripe_event: StripeEventRef,
        at: DateTime<Utc>,
    },
    /// Stripe's cumulative refunded total for the charge changed (up with a refund, down
    /// when one fails): the one event projections and workflows read for refunds.
    RefundRecorded {
        charge_id: String,
        /// Cumulative, as Stripe reports it: never lowered by a late, older report.
        amount_refunded: Money,
        /// How much this report added to the total; what revenue reports subtract.
        refunded_increase: Money,
        status: PaymentStatus,
        stripe_event: StripeEventRef,
        at: DateTime<Utc>,
        /// The charge's cumulative `amount_refunded` when the change came from a
        /// `charge.refunded` report.
        #[serde(default)]
        charge_amount_refunded: Option<Money>,
        /// The refund (`re_…`) when the change came from a refund report. Both `None`: a
        /// journal older than the refund ledger, whose totals all were charge reports.
        #[serde(default)]
        refund_id: Option<String>,
        /// Our refund request the report names (through its idempotency key), if any.
        #[serde(default)]
        refund_request_id: Option<Uuid>,
    },
    /// A Stripe report that is stale, repeated or contradicted by a stronger fact.
    StripeReportIgnored {
        report: StripeReport,
        reason: String,
        stripe_event: StripeEventRef,
        at: DateTime<Utc>,
    },
    /// Stripe accepted our capture of an authorization; the money is a fact only once
    /// Stripe reports `PaymentSucceeded`. Written by the capture job after
    /// `PaymentCaptureOrdered` (journals older than the job wrote it alone, from inside
    /// the command that called Stripe).
    PaymentCaptureRequested {
        payment_intent_id: String,
        amount_to_capture: Money,
        at: DateTime<Utc>,
    },
    /// Stripe accepted our release of an authorization (`payment_intent.canceled`, recorded
    /// as `PaymentCancelled`, confirms it). Written by the cancellation job after
    /// `PaymentCancellationOrdered` (older journals wrote it alone).
    PaymentCancellationRequested {
        payment_intent_id: String,
        reason: String,
        at: DateTime<Utc>,
    },
    /// Someone (the device workflow, once the relay is ON) decided to capture; the capture
    /// job then asks Stripe with the key `latchkey-capture-<payment id>`.
    PaymentCaptureOrdered {
        payment_intent_id: String,
        amount_to_capture: Money,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// Stripe refused our capture for good (declined, authorization expired or cancelled):
    /// nothing was collected and nothing will be; the session is ended at once.
    PaymentCaptureFailed {
        payment_intent_id: String,
        reason: String,
        at: DateTime<Utc>,
    },
    /// Someone decided to release the authorization (the device never started, the
    /// capture failed, the authorization nears Stripe's 7-day limit); the cancellation job
    /// then asks Stripe with the key `latchkey-cancel-<payment id>`.
    PaymentCancellationOrdered {
        payment_intent_id: String,
        reason: String,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// Stripe refused to release the authorization (e.g. it was already captured or
    /// cancelled); an operator should look at the payment in Stripe's Dashboard.
    PaymentCancellationFailed {
        payment_intent_id: String,
        reason: String,
        at: DateTime<Utc>,
    },
    /// Stripe cancelled the PaymentIntent (`payment_intent.canceled`).
    PaymentCancelled {
        payment_intent_id: String,
        cancellation_reason: Option<String>,
        status: PaymentStatus,
        stripe_event: StripeEventRef,
        at: DateTime<Utc>,
    },
    /// The Checkout Session expired unpaid (`checkout.session.expired`).
    CheckoutExpired {
        checkout_session_id: String,
        status: PaymentStatus,
        stripe_event: StripeEventRef,
        at: DateTime<Utc>,
    },
    /// Someone decided to refund; Stripe accepted the request as `stripe_refund_id`.
    /// Written by the first design, which called Stripe inside the command; new journals
    /// write `RefundOrdered` then `RefundSubmitted` instead. Still read from old journals.
    RefundRequested {
        refund_request_id: Uuid,
        amount: Money,
        reason: String,
        actor: Actor,
        stripe_refund_id: String,
        /// The cumulative refunded total Stripe should report once this refund lands;
        /// further requests may only refund what lies above it.
        expected_amount_refunded: Money,
        at: DateTime<Utc>,
    },
    /// Someone decided to refund (an operator, or a workflow making a guest whole). Journalled
    /// before Stripe is asked, so who and why are kept whatever Stripe answers; the refund
    /// job then asks Stripe with an idempotency key derived from `refund_request_id`.
    RefundOrdered {
        refund_request_id: Uuid,
        /// What is asked of Stripe; for "refund the rest", the rest as decided here.
        amount: Money,
        reason: String,
        actor: Actor,
        at: DateTime<Utc>,
        /// The person asked for "the rest" rather than for `amount`.
        #[serde(default)]
        asked_for_the_rest: bool,
    },
    /// Stripe answered our refund request by creating `stripe_refund_id`. Whether (and how
    /// much) it counts is decided by Stripe's reports of that refund, never by this answer.
    RefundSubmitted {
        refund_request_id: Uuid,
        stripe_refund_id: String,
        amount: Money,
        refund_status: RefundStatus,
        at: DateTime<Utc>,
    },
    /// Stripe refused our refund request (e.g. already refunded elsewhere); nothing was
    /// refunded and the request no longer reserves its amount.
    RefundSubmissionFailed {
        refund_request_id: Uuid,
        reason: String,
        at: DateTime<Utc>,
    },
    /// Stripe reported one refund (`refund.created`, `refund.updated`, `refund.failed`).
    StripeRefundReported {
        refund_id: String,
        charge_id: String,
        amount: Money,
        refund_status: RefundStatus,
        /// The refund's own `created` (Stripe's clock).
        refund_created: DateTime<Utc>,
        /// Our request, from the refund's `latchkey_refund_request_id` metadata.
        refund_request_id: Option<Uuid>,
        failure_reason: Option<String>,
        stripe_event: StripeEventRef,
        at: DateTime<Utc>,
    },
    /// The guest's bank opened a dispute (`charge.dispute.created`).
    PaymentDisputed {
        dispute_id: String,
        amount: Money,
        reason: String,
        stripe_event: StripeEventRef,
        at: DateTime<Utc>,
    },
    /// Stripe reported an amount that is not the one expected (audit `amount_mismatch`).
    /// `Below`: the money is recorded (a `PaymentSucceeded` or `PaymentAuthorized` comes
    /// with it) but no access is granted until an operator decides. `Above` and
    /// `OtherCurrency`: the report is refused; the payment does not move.
    PaymentAmountMismatch {
        /// What the payment expected: the locked price, or the capture we asked for.
        expected: Money,
        reported: Money,
        direction: AmountMismatchDirection,
        /// The report that carried the amount (`authorization` or `success`).
        report: StripeReport,
        stripe_event: StripeEventRef,
        at: DateTime<Utc>,
    },
    /// An operator granted access to a payment held for an amount below its price
    /// (audit `access_granted`).
    PaymentAccessGranted {
        reason: String,
        actor: Actor,
        at: DateTime<Utc>,
    },
    /// A dispute took the disputed amount back from us (`charge.dispute.funds_withdrawn`,
    /// or a `charge.dispute.closed` lost before any withdrawal was reported). Reports
    /// subtract it from net revenue.
    DisputeFundsWithdrawn {
        dispute_id: String,
        amount: Money,
        stripe_event: StripeEventRef,
        at: DateTime<Utc>,
    },
    /// A won dispute gave the amount back (`charge.dispute.funds_reinstated`, or a
    /// `charge.dispute.closed` won). Reports add it back.
    DisputeFundsReinstated {
        dispute_id: String,
        amount: Money,
        stripe_event: StripeEventRef,
        at: DateTime<Utc>,
    },
    /// Stripe closed a dispute with its final `status` (`won`, `lost`, `warning_closed`).
    DisputeClosed {
        dispute_id: String,
        status: String,
        stripe_event: StripeEventRef,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for PaymentEvent {
    fn event_type(&self) -> String {
        let name = match self {
            Self::CheckoutStarted { .. } => "CheckoutStarted",
            Self::CheckoutSessionCreated { .. } => "CheckoutSessionCreated",
            Self::PaymentAuthorized { .. } => "PaymentAuthorized",
            Self::PaymentFailed { .. } => "PaymentFailed",
            Self::PaymentSucceeded { .. } => "PaymentSucceeded",
            Self::DuplicateConfirmationIgnored { .. } => "DuplicateConfirmationIgnored",
            Self::RefundRecorded { .. } => "RefundRecorded",
            Self::StripeReportIgnored { .. } => "StripeReportIgnored",
            Self::PaymentCaptureRequested { .. } => "PaymentCaptureRequested",
            Self::PaymentCancellationRequested { .. } => "PaymentCancellationRequested",
            Self::PaymentCancelled { .. } => "PaymentCancelled",
            Self::CheckoutExpired { .. } => "CheckoutExpired",
            Self::RefundRequested { .. } => "RefundRequested",
            Self::PaymentDisputed { .. } => "PaymentDisputed",
            Self::RefundOrdered { .. } => "RefundOrdered",
            Self::RefundSubmitted { .. } => "RefundSubmitted",
            Self::RefundSubmissionFailed { .. } => "RefundSubmissionFailed",
            Self::StripeRefundReported { .. } => "StripeRefundReported",
            Self::PaymentCaptureOrdered { .. } => "PaymentCaptureOrdered",
            Self::PaymentCaptureFailed { .. } => "PaymentCaptureFailed",
            Self::PaymentCancellationOrdered { .. } => "PaymentCancellationOrdered",
            Self::PaymentCancellationFailed { .. } => "PaymentCancellationFailed",
            Self::PaymentAmountMismatch { .. } => "PaymentAmountMismatch",
            Self::PaymentAccessGranted { .. } => "PaymentAccessGranted",
            Self::DisputeFundsWithdrawn { .. } => "DisputeFundsWithdrawn",
            Self::DisputeFundsReinstated { .. } => "DisputeFundsReinstated",
            Self::DisputeClosed { .. } => "DisputeClosed",
        };
        name.to_owned()
    }

    fn event_version(&self) -> String {
        crate::EVENT_VERSION.to_owned()
    }
}
