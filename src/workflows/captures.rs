//! Captures and releases of device payments' authorizations: from a decision to Stripe's
//! answer, so a capture cannot be lost and a hold is always released.
//!
//! | fact | decision |
//! |---|---|
//! | `PaymentCaptureOrdered` | schedule the job "capture payment P" (durable, retried) |
//! | `PaymentCancellationOrdered` | schedule the job "release the authorization of P" |
//! | `PaymentAuthorized` of a device payment | schedule "authorization deadline of P" at checkout start + [`AUTHORIZATION_DEADLINE`] |
//! | `PaymentSucceeded`, `PaymentCancelled`, `CheckoutExpired` | drop that deadline: the authorization is settled |
//!
//! The jobs ([`submit_capture`], [`submit_cancellation`]) run outside any command, like the
//! refund job: they ask Stripe with the payment's Idempotency-Key (`latchkey-capture-<id>`,
//! `latchkey-cancel-<id>`), so a re-run after a crash gets Stripe's first answer replayed
//! and a payment is captured or released at Stripe at most once. Network trouble and Stripe
//! 5xx are retried with the scheduler's backoff; a refusal (a decline, an authorization
//! expired or cancelled) is recorded on the payment (`PaymentCaptureFailed`,
//! `PaymentCancellationFailed`), and the device workflow ends the session at once.
//!
//! Stripe cancels an uncaptured PaymentIntent 7 days after it was created (with Checkout,
//! when the session was created, i.e. about when checkout started). The deadline job
//! ([`authorization_deadline`]) runs well before: a session that ran is captured, one that
//! never started is cancelled and its hold released.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::AggregateError;
use latchkey_aggregates::payment::services::GatewayErrorKind;
use latchkey_aggregates::payment::{PaymentCommand, PaymentKind, PaymentStatus, StripeAnswer};
use latchkey_aggregates::session::{SessionCommand, SessionState};
use latchkey_aggregates::Actor;
use uuid::Uuid;

use super::schedule::{schedule, unschedule, Job};
use crate::cqrs::{Buses, CommandMetadata};
use crate::store::journal::JournalEvent;
use crate::store::subscription::{Delivery, Subscriber};
use crate::store::{Database, Tx};

/// The workflow's subscriber name (and singleton lock).
pub const NAME: &str = "workflow:captures";

/// How long after checkout started an uncaptured authorization is settled (captured or
/// released): 6.5 days, half a day before Stripe's 7-day limit.
pub const AUTHORIZATION_DEADLINE: chrono::Duration = chrono::Duration::hours(6 * 24 + 12);

pub struct CaptureWorkflow {
    database: Database,
    buses: std::sync::Arc<Buses>,
}

impl CaptureWorkflow {
    pub fn new(database: Database, buses: std::sync::Arc<Buses>) -> Self {
        CaptureWorkflow { database, buses }
    }
}

/// The scheduler key of a payment's capture job: scheduling it twice stores it once.
pub fn capture_job_key(payment_id: Uuid) -> String {
    format!("capture:{payment_id}")
}

/// The scheduler key of a payment's release job.
pub fn cancellation_job_key(payment_id: Uuid) -> String {
    format!("cancel-authorization:{payment_id}")
}

/// The scheduler key of a payment's deadline job.
pub fn deadline_job_key(payment_id: Uuid) -> String {
    format!("authorization-deadline:{payment_id}")
}

/// When an authorization obtained at a checkout started at `started_at` is settled.
pub fn deadline_of(started_at: DateTime<Utc>) -> DateTime<Utc> {
    started_at + AUTHORIZATION_DEADLINE
}

#[async_trait]
impl Subscriber for CaptureWorkflow {
    fn name(&self) -> &str {
        NAME
    }

    async fn apply(&self, _tx: &mut Tx, _event: &JournalEvent) -> anyhow::Result<()> {
        anyhow::bail!("the capture workflow reacts outside transactions")
    }

    fn delivery(&self) -> Delivery {
        Delivery::Effects
    }

    async fn react(&self, event: &JournalEvent) -> anyhow::Result<()> {
        if event.aggregate_type != "Payment" {
            return Ok(());
        }
        let payment_id: Uuid = event.aggregate_id.parse()?;
        let (key, due_at, job) = match event.event_type.as_str() {
            "PaymentCaptureOrdered" => (
                capture_job_key(payment_id),
                Utc::now(),
                Job::CapturePayment { payment_id },
            ),
            "PaymentCancellationOrdered" => (
                cancellation_job_key(payment_id),
                Utc::now(),
                Job::CancelAuthorization { payment_id },
            ),
            "PaymentSucceeded" | "PaymentCancelled" | "CheckoutExpired" => {
                return unschedule(&self.database, &deadline_job_key(payment_id)).await;
            }
            "PaymentAuthorized" => {
                let (payment, _) = self.buses.payments.load(&event.aggregate_id).await?;
                let Some(started_at) = payment.started_at() else {
                    return Ok(());
                };
                if payment.kind() != Some(PaymentKind::Device) {
                    return Ok(());
                }
                (
                    deadline_job_key(payment_id),
                    deadline_of(started_at),
                    Job::AuthorizationDeadline { payment_id },
                )
            }
            _ => return Ok(()),
        };
        schedule(&self.database, &key, due_at, &job).await
    }
}

fn metadata(source: &str, payment_id: Uuid) -> CommandMetadata {
    CommandMetadata::new(Actor::System.to_string(), source)
        .with("payment_id", payment_id.to_string())
}

/// Sends `command` to the payment; a refusal that retrying cannot change is logged and
/// completes the job.
async fn record(
    buses: &Buses,
    payment_id: Uuid,
    command: PaymentCommand,
    source: &str,
) -> anyhow::Result<()> {
    let id = payment_id.to_string();
    match buses
        .payments
        .execute(&id, command, metadata(source, payment_id))
        .await
    {
        Ok(()) => Ok(()),
        Err(AggregateError::UserError(refusal)) => {
            tracing::warn!(payment_id = %payment_id, refusal = %refusal, source, "payment job: command refused");
            Ok(())
        }
        Err(other) => Err(anyhow::anyhow!("{other}")),
    }
}

/// Asks Stripe to capture the payment and records the answer. `Err` means "try again
/// later" (the scheduler backs off).
pub async fn submit_capture(buses: &Buses, payment_id: Uuid) -> anyhow::Result<()> {
    let (payment, _) = buses.payments.load(&payment_id.to_string()).await?;
    let Some(request) = payment.capture_submission() else {
        // Answered already, or Stripe reported the money: nothing to send.
        return Ok(());
    };
    let outcome = match buses.payment_gateway.capture(request).await {
        Ok(()) => StripeAnswer::Accepted,
        Err(error) if error.kind == GatewayErrorKind::Retryable => {
            tracing::warn!(payment_id = %payment_id, error = %error,
                "Stripe did not answer the capture; retrying later");
            anyhow::bail!("Stripe did not answer the capture: {error}");
        }
        Err(error) => {
            tracing::warn!(payment_id = %payment_id, error = %error, "Stripe refused the capture");
            StripeAnswer::Refused {
                reason: error.message,
            }
        }
    };
    let command = PaymentCommand::RecordCaptureSubmission {
        outcome,
        actor: Actor::System,
        at: Utc::now(),
    };
    record(buses, payment_id, command, "capture_job").await
}

/// Asks Stripe to release the payment's authorization and records the answer.
pub async fn submit_cancellation(buses: &Buses, payment_id: Uuid) -> anyhow::Result<()> {
    let (payment, _) = buses.payments.load(&payment_id.to_string()).await?;
    let Some(request) = payment.cancellation_submission() else {
        // Answered already, or Stripe closed the payment itself.
        return Ok(());
    };
    let outcome = match buses.payment_gateway.cancel_authorization(request).await {
        Ok(()) => StripeAnswer::Accepted,
        Err(error) if error.kind == GatewayErrorKind::Retryable => {
            tracing::warn!(payment_id = %payment_id, error = %error,
                "Stripe did not answer the release of the authorization; retrying later");
            anyhow::bail!("Stripe did not answer the release of the authorization: {error}");
        }
        Err(error) => {
            tracing::warn!(payment_id = %payment_id, error = %error,
                "Stripe refused to release the authorization");
            StripeAnswer::Refused {
                reason: error.message,
            }
        }
    };
    let command = PaymentCommand::RecordCancellationSubmission {
        outcome,
        actor: Actor::System,
        at: Utc::now(),
    };
    record(buses, payment_id, command, "cancellation_job").await
}

/// Settles an authorization before Stripe's 7-day limit: a session that ran is captured;
/// one still waiting (queued, or never switched on) is cancelled, which releases the hold.
pub async fn authorization_deadline(buses: &Buses, payment_id: Uuid) -> anyhow::Result<()> {
    let id = payment_id.to_string();
    let (payment, _) = buses.payments.load(&id).await?;
    let capture_in_flight = payment.capture_ordered() && payment.capture_failure().is_none();
    if payment.status() != PaymentStatus::Authorized
        || capture_in_flight
        || payment.cancellation_ordered()
    {
        return Ok(());
    }
    let (session, _) = buses.sessions.load(&id).await?;
    let now = Utc::now();
    if session.started_at().is_some() && payment.capture_failure().is_none() {
        tracing::warn!(payment_id = %payment_id, "an authorization nears Stripe's limit uncaptured; capturing it");
        let command = PaymentCommand::CapturePayment {
            amount_to_capture: None,
            actor: Actor::System,
            at: now,
        };
        return record(buses, payment_id, command, "authorization_deadline").await;
    }
    let reason =
        "the card authorization nears Stripe's 7-day limit and the session has not started";
    if matches!(
        session.state(),
        Some(SessionState::Queued | SessionState::Opened)
    ) {
        // The session's end releases the hold (device workflow).
        let command = SessionCommand::CancelSession {
            reason: reason.to_string(),
            actor: Actor::System,
            at: now,
        };
        return match buses
            .sessions
            .execute(&id, command, metadata("authorization_deadline", payment_id))
            .await
        {
            Ok(()) | Err(AggregateError::UserError(_)) => Ok(()),
            Err(other) => Err(anyhow::anyhow!("{other}")),
        };
    }
    let command = PaymentCommand::CancelAuthorization {
        reason: reason.to_string(),
        actor: Actor::System,
        at: now,
    };
    record(buses, payment_id, command, "authorization_deadline").await
}
