//! Door access: from a paid payment to a TTLock code, and from a refund back to no code.
//!
//! | fact | decision |
//! |---|---|
//! | `PaymentSucceeded` of a door payment | Door: issue the payment's code now, unless the payment is held (Stripe reported less than the price) |
//! | `PaymentAccessGranted` (an operator's decision on a held payment) | Door: issue the code |
//! | `RefundRecorded` leaving the payment `refunded` | Door: revoke (delete) the code |
//! | `PaymentDisputed`, when `LATCHKEY_DISPUTE_REVOKES_ACCESS` is on (default) | Door: revoke the code |
//! | `AccessCodeIssueFailed`, retryable, below the attempt limit | schedule another issue after a backoff |
//! | `AccessCodeRevocationPending` | schedule another delete after a backoff |
//! | `AccessCodeIssued` | schedule the code's deletion when its window ends |
//!
//! A partial refund keeps access: the guest still paid for some of it, and an operator who
//! wants access gone refunds in full (or revokes). Everything the workflow does is
//! idempotent in the Door aggregate (a live code is never issued twice; a revoked code stays
//! revoked), so reacting to an event twice after a crash changes nothing.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::AggregateError;
use latchkey_aggregates::door::{DoorCommand, MAX_ISSUE_ATTEMPTS};
use latchkey_aggregates::payment::PaymentTarget;
use latchkey_aggregates::Actor;
use serde_json::Value;
use uuid::Uuid;

use super::schedule::{backoff, schedule, Job};
use crate::cqrs::{Buses, CommandMetadata};
use crate::store::journal::JournalEvent;
use crate::store::subscription::{Delivery, Subscriber};
use crate::store::{Database, Tx};

/// The workflow's subscriber name (and singleton lock).
pub const NAME: &str = "workflow:door_access";

pub struct DoorAccessWorkflow {
    buses: Arc<Buses>,
    database: Database,
    /// First retry delay of a failed TTLock call; doubled per attempt up to `retry_max`.
    retry_base: Duration,
    retry_max: Duration,
    /// Issue attempts per code before the workflow gives up and leaves it failed (at most
    /// the Door's own [`MAX_ISSUE_ATTEMPTS`]).
    issue_attempts: u32,
    /// `LATCHKEY_DISPUTE_REVOKES_ACCESS`: a dispute revokes the payment's code.
    dispute_revokes_access: bool,
}

/// What the workflow needs of a door payment.
struct DoorPayment {
    door_uid: String,
    locked_minutes: Option<u32>,
    access_held: bool,
}

/// How a failed TTLock call is retried.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// First retry delay; doubled per attempt up to `max`.
    pub base: Duration,
    pub max: Duration,
    /// Attempts before giving up (clamped to the Door's [`MAX_ISSUE_ATTEMPTS`]).
    pub attempts: u32,
}

impl DoorAccessWorkflow {
    pub fn new(buses: Arc<Buses>, database: Database, retry: RetryPolicy) -> Self {
        DoorAccessWorkflow {
            buses,
            database,
            retry_base: retry.base,
            retry_max: retry.max,
            issue_attempts: retry.attempts.clamp(1, MAX_ISSUE_ATTEMPTS),
            dispute_revokes_access: true,
        }
    }

    /// Whether a dispute revokes the code (`LATCHKEY_DISPUTE_REVOKES_ACCESS`; on by default).
    pub fn revoking_on_dispute(mut self, revoke: bool) -> Self {
        self.dispute_revokes_access = revoke;
        self
    }

    /// The door of a door payment with the access minutes locked at its checkout (`None`
    /// for a payment older than locked offers) and whether its access is held for an
    /// operator, or `None` for a device payment.
    async fn door_of(&self, payment_id: &str) -> anyhow::Result<Option<DoorPayment>> {
        let (payment, _) = self.buses.payments.load(payment_id).await?;
        Ok(match payment.target() {
            Some(PaymentTarget::Door { door_uid }) => Some(DoorPayment {
                door_uid: door_uid.clone(),
                locked_minutes: payment.locked_offer().map(|offer| offer.minutes),
                access_held: payment.is_access_held(),
            }),
            _ => None,
        })
    }

    async fn on_payment(&self, event: &JournalEvent) -> anyhow::Result<()> {
        let payment_id: Uuid = event.aggregate_id.parse()?;
        let status = event.payload.get("status").and_then(Value::as_str);
        let Some(door) = self.door_of(&event.aggregate_id).await? else {
            return Ok(());
        };
        let issue = DoorCommand::IssueAccessCode {
            payment_id,
            actor: Actor::System,
            at: Utc::now(),
            locked_minutes: door.locked_minutes,
        };
        let command = match event.event_type.as_str() {
            "PaymentSucceeded" if door.access_held => {
                // Stripe reported less than the price: an operator grants or refunds.
                tracing::warn!(payment_id = %payment_id, door_uid = %door.door_uid,
                    "door code held: the amount received is below the price");
                return Ok(());
            }
            "PaymentSucceeded" | "PaymentAccessGranted" => issue,
            "PaymentDisputed" if self.dispute_revokes_access => DoorCommand::RevokeAccessCode {
                payment_id,
                reason: "the payment is disputed".to_string(),
                actor: Actor::System,
                at: Utc::now(),
            },
            "RefundRecorded" if status == Some("refunded") => DoorCommand::RevokeAccessCode {
                payment_id,
                reason: "the payment was refunded in full".to_string(),
                actor: Actor::System,
                at: Utc::now(),
            },
            _ => return Ok(()),
        };
        self.execute(&door.door_uid, command, event).await
    }

    async fn on_door(&self, event: &JournalEvent) -> anyhow::Result<()> {
        let door_uid = &event.aggregate_id;
        let payload = &event.payload;
        let payment_id = payload
            .get("payment_id")
            .and_then(Value::as_str)
            .and_then(|id| Uuid::parse_str(id).ok());
        let attempt = payload.get("attempt").and_then(Value::as_u64).unwrap_or(1) as u32;
        match (event.event_type.as_str(), payment_id) {
            ("AccessCodeIssueFailed", Some(payment_id)) => {
                if payload.get("retryable").and_then(Value::as_bool) != Some(true) {
                    return Ok(());
                }
                if attempt >= self.issue_attempts {
                    // The failure just recorded is the last: the code stays failed, with
                    // TTLock's reason in the journal (audit `access_code_failed`).
                    let reason = payload.get("reason").and_then(Value::as_str);
                    tracing::warn!(door_uid = %door_uid, payment_id = %payment_id, attempt,
                        reason, "door code: giving up after the last attempt");
                    return Ok(());
                }
                let due = Utc::now() + backoff(self.retry_base, self.retry_max, attempt);
                let job = Job::IssueAccessCode {
                    door_uid: door_uid.clone(),
                    payment_id,
                };
                schedule(
                    &self.database,
                    &format!("issue:{door_uid}:{payment_id}:{attempt}"),
                    due,
                    &job,
                )
                .await
            }
            ("AccessCodeRevocationPending", Some(payment_id)) => {
                let due = Utc::now() + backoff(self.retry_base, self.retry_max, attempt);
                let job = Job::RevokeAccessCode {
                    door_uid: door_uid.clone(),
                    payment_id,
                    reason: payload
                        .get("reason")
                        .and_then(Value::as_str)
                        .unwrap_or("revocation retry")
                        .to_string(),
                };
                schedule(
                    &self.database,
                    &format!("revoke:{door_uid}:{payment_id}:{attempt}"),
                    due,
                    &job,
                )
                .await
            }
            ("AccessCodeIssued", Some(payment_id)) => {
                let valid_to: DateTime<Utc> = serde_json::from_value(payload["valid_to"].clone())?;
                let job = Job::ExpireAccessCodes {
                    door_uid: door_uid.clone(),
                };
                schedule(
                    &self.database,
                    &format!("expire:{door_uid}:{payment_id}"),
                    valid_to,
                    &job,
                )
                .await
            }
            _ => Ok(()),
        }
    }

    async fn execute(
        &self,
        door_uid: &str,
        command: DoorCommand,
        cause: &JournalEvent,
    ) -> anyhow::Result<()> {
        let metadata = CommandMetadata::new(Actor::System.to_string(), "workflow").with(
            "caused_by",
            format!(
                "{} {} {}",
                cause.aggregate_type, cause.aggregate_id, cause.sequence
            ),
        );
        match self.buses.doors.execute(door_uid, command, metadata).await {
            Ok(()) => Ok(()),
            // A refusal is a decision of the Door (maintenance, already revoked, attempts
            // exhausted): retrying the event cannot change it, and the journal holds why.
            Err(AggregateError::UserError(refusal)) => {
                tracing::warn!(door_uid, payment_id = %cause.aggregate_id, refusal = %refusal, "door refused the workflow's command");
                Ok(())
            }
            Err(other) => Err(anyhow::anyhow!("door {door_uid}: {other}")),
        }
    }
}

#[async_trait]
impl Subscriber for DoorAccessWorkflow {
    fn name(&self) -> &str {
        NAME
    }

    async fn apply(&self, _tx: &mut Tx, _event: &JournalEvent) -> anyhow::Result<()> {
        anyhow::bail!("the door access workflow reacts outside transactions")
    }

    fn delivery(&self) -> Delivery {
        Delivery::Effects
    }

    async fn react(&self, event: &JournalEvent) -> anyhow::Result<()> {
        match event.aggregate_type.as_str() {
            "Payment" => self.on_payment(event).await,
            "Door" => self.on_door(event).await,
            _ => Ok(()),
        }
    }
}
