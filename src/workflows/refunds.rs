//! Refunds: from an operator's (or a workflow's) decision to Stripe's answer.
//!
//! | fact | decision |
//! |---|---|
//! | `RefundOrdered` | schedule the job "submit refund request R" (durable, retried) |
//!
//! The job ([`submit_refund`]) asks Stripe with the Idempotency-Key derived from the
//! request id and records Stripe's answer on the payment. It runs outside any command: a
//! command re-run after an optimistic-concurrency conflict therefore never repeats a money
//! move, and a job re-run after a crash repeats the same key, for which Stripe replays its
//! first answer. Network trouble and Stripe 5xx are retried with the scheduler's backoff; a
//! refusal (already refunded elsewhere, charge disputed) is recorded on the payment, visible
//! in the audit log, and frees the amount the request reserved.

use async_trait::async_trait;
use chrono::Utc;
use cqrs_es::AggregateError;
use latchkey_aggregates::payment::services::GatewayErrorKind;
use latchkey_aggregates::payment::{PaymentCommand, PaymentError, RefundSubmissionOutcome};
use latchkey_aggregates::Actor;
use serde_json::Value;
use uuid::Uuid;

use super::schedule::{schedule, Job};
use crate::cqrs::{Buses, CommandMetadata};
use crate::store::journal::JournalEvent;
use crate::store::subscription::{Delivery, Subscriber};
use crate::store::{Database, Tx};

/// The workflow's subscriber name (and singleton lock).
pub const NAME: &str = "workflow:refunds";

pub struct RefundWorkflow {
    database: Database,
}

impl RefundWorkflow {
    pub fn new(database: Database) -> Self {
        RefundWorkflow { database }
    }
}

/// The scheduler key of a refund request's job: scheduling it twice stores it once.
pub fn submit_job_key(refund_request_id: Uuid) -> String {
    format!("refund:{refund_request_id}")
}

#[async_trait]
impl Subscriber for RefundWorkflow {
    fn name(&self) -> &str {
        NAME
    }

    async fn apply(&self, _tx: &mut Tx, _event: &JournalEvent) -> anyhow::Result<()> {
        anyhow::bail!("the refund workflow reacts outside transactions")
    }

    fn delivery(&self) -> Delivery {
        Delivery::Effects
    }

    async fn react(&self, event: &JournalEvent) -> anyhow::Result<()> {
        if event.aggregate_type != "Payment" || event.event_type != "RefundOrdered" {
            return Ok(());
        }
        let payment_id: Uuid = event.aggregate_id.parse()?;
        let refund_request_id: Uuid = event
            .payload
            .get("refund_request_id")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow::anyhow!("RefundOrdered without refund_request_id"))?
            .parse()?;
        let job = Job::SubmitRefund {
            payment_id,
            refund_request_id,
        };
        schedule(
            &self.database,
            &submit_job_key(refund_request_id),
            Utc::now(),
            &job,
        )
        .await
    }
}

/// Asks Stripe for one refund request and records the answer. `Err` means "try again
/// later" (the scheduler backs off); everything else is recorded on the payment.
pub async fn submit_refund(
    buses: &Buses,
    payment_id: Uuid,
    refund_request_id: Uuid,
) -> anyhow::Result<()> {
    let id = payment_id.to_string();
    let (payment, _) = buses.payments.load(&id).await?;
    let Some(request) = payment.refund_submission(refund_request_id) else {
        // Answered already (or tied to its refund by a webhook): nothing to send.
        return Ok(());
    };
    let outcome = match buses.payment_gateway.refund(request).await {
        Ok(receipt) => RefundSubmissionOutcome::Accepted {
            stripe_refund_id: receipt.refund_id,
            amount: receipt.amount,
            refund_status: receipt.status,
        },
        Err(error) if error.kind == GatewayErrorKind::Retryable => {
            tracing::warn!(payment_id = %payment_id, refund_request_id = %refund_request_id,
                error = %error, "Stripe did not answer the refund; retrying later");
            anyhow::bail!("Stripe did not answer the refund: {error}");
        }
        Err(error) => RefundSubmissionOutcome::Refused {
            reason: error.message,
        },
    };
    let command = PaymentCommand::RecordRefundSubmission {
        refund_request_id,
        outcome,
        actor: Actor::System,
        at: Utc::now(),
    };
    let metadata = CommandMetadata::new(Actor::System.to_string(), "refund_job")
        .with("refund_request_id", refund_request_id.to_string());
    match buses.payments.execute(&id, command, metadata).await {
        Ok(()) => Ok(()),
        Err(AggregateError::UserError(refusal @ PaymentError::UnknownRefundRequest { .. })) => {
            tracing::error!(payment_id = %payment_id, refusal = %refusal, "refund job for an unknown request");
            Ok(())
        }
        Err(other) => Err(anyhow::anyhow!("{other}")),
    }
}
