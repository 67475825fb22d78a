//! Device sessions: from an authorized (or paid) device payment to a session holding the
//! relay, and from its end back to a free device.
//!
//! | fact | decision |
//! |---|---|
//! | `PaymentAuthorized` / `PaymentSucceeded` of a device payment with no session yet | Device: reserve (or queue) session = payment id; refused (maintenance, queue full) → Payment: release the authorization |
//! | `DeviceReserved` | DeviceSession: open with the plan's minutes and a grace period |
//! | `DeviceReservationQueued` | DeviceSession: queue |
//! | `SessionActivated` (relay confirmed ON) | Payment: order the capture of an authorized payment (a payment no longer capturable: force end) |
//! | `PaymentCaptureFailed`, `PaymentCancelled`, `CheckoutExpired` | DeviceSession: cancel (queued, opened) or force end (running) at once |
//! | `SessionCancelled` / `SessionFailed` / `SessionForceEnded` before the relay came ON | Payment: release the authorization; Device: release |
//! | `SessionCompleted` / `SessionForceEnded` after it | Device: release (promotes the queue) |
//! | `RefundRecorded` leaving a device payment `refunded` | DeviceSession: force end |
//! | `PaymentDisputed`, when `LATCHKEY_DISPUTE_REVOKES_ACCESS` is on (default) | DeviceSession: force end |
//! | `PaymentAccessGranted` (an operator's decision on a payment held for being below its price) | Device: reserve, as on the authorization |
//!
//! Deciding to capture or to release only journals the decision; the capture workflow's
//! jobs ask Stripe (see [`super::captures`]). Every path where a device payment will not be
//! captured ends in exactly one release at Stripe: the release is one decision per payment.
//!
//! Switching the relay is not decided here: the reconciler drives relays from the
//! sessions' state. Every command is idempotent in its aggregate, so an event handled
//! twice after a crash changes nothing.

use std::sync::Arc;

use async_trait::async_trait;
use cqrs_es::AggregateError;
use latchkey_aggregates::device::{DeviceCommand, DeviceError};
use latchkey_aggregates::payment::{Payment, PaymentCommand, PaymentStatus, PaymentTarget};
use latchkey_aggregates::session::{SessionCommand, SessionState, SessionTerms};
use latchkey_aggregates::Actor;
use serde_json::Value;
use uuid::Uuid;

use crate::cqrs::{Buses, CommandMetadata};
use crate::reconciler::Clock;
use crate::store::journal::JournalEvent;
use crate::store::parking::permanent;
use crate::store::subscription::{Delivery, Subscriber};
use crate::store::Tx;

/// The workflow's subscriber name (and singleton lock).
pub const NAME: &str = "workflow:device_sessions";

pub struct DeviceSessionWorkflow {
    buses: Arc<Buses>,
    /// The same clock as the reconciler's: a session's grace period starts at "now" as the
    /// reconciler will judge it.
    clock: Arc<dyn Clock>,
    /// How long an opened session waits for its relay to come ON before it is cancelled.
    grace_seconds: u32,
    /// `LATCHKEY_DISPUTE_REVOKES_ACCESS`: a dispute force-ends the payment's session.
    dispute_ends_session: bool,
}

impl DeviceSessionWorkflow {
    pub fn new(buses: Arc<Buses>, clock: Arc<dyn Clock>, grace_seconds: u32) -> Self {
        DeviceSessionWorkflow {
            buses,
            clock,
            grace_seconds,
            dispute_ends_session: true,
        }
    }

    /// Whether a dispute force-ends the session (`LATCHKEY_DISPUTE_REVOKES_ACCESS`).
    pub fn ending_sessions_on_dispute(mut self, end: bool) -> Self {
        self.dispute_ends_session = end;
        self
    }

    fn metadata(cause: &JournalEvent) -> CommandMetadata {
        CommandMetadata::new(Actor::System.to_string(), "workflow").with(
            "caused_by",
            format!(
                "{} {} {}",
                cause.aggregate_type, cause.aggregate_id, cause.sequence
            ),
        )
    }

    async fn on_payment(&self, event: &JournalEvent) -> anyhow::Result<()> {
        let payment_id: Uuid = event.aggregate_id.parse()?;
        let status = event.payload.get("status").and_then(Value::as_str);
        let reserve = matches!(
            event.event_type.as_str(),
            "PaymentAuthorized" | "PaymentSucceeded" | "PaymentAccessGranted"
        );
        let not_capturable = matches!(
            event.event_type.as_str(),
            "PaymentCaptureFailed" | "PaymentCancelled" | "CheckoutExpired"
        );
        let end_reason = match event.event_type.as_str() {
            "RefundRecorded" if status == Some("refunded") => {
                Some("the payment was refunded in full")
            }
            "PaymentDisputed" if self.dispute_ends_session => Some("the payment is disputed"),
            _ => None,
        };
        if !reserve && end_reason.is_none() && !not_capturable {
            return Ok(());
        }
        let (payment, _) = self.buses.payments.load(&event.aggregate_id).await?;
        let Some(PaymentTarget::Device { device_uid, .. }) = payment.target() else {
            return Ok(());
        };
        if not_capturable {
            return self.end_uncapturable(event, &payment).await;
        }
        if let Some(reason) = end_reason {
            let command = SessionCommand::ForceEndSession {
                reason: reason.into(),
                actor: Actor::System,
                at: self.clock.now(),
            };
            return self.tolerate(
                self.buses
                    .sessions
                    .execute(&event.aggregate_id, command, Self::metadata(event))
                    .await,
            );
        }
        // Stripe reported less than the price: an operator grants or refunds first.
        if payment.is_access_held() {
            tracing::warn!(payment_id = %payment_id, device_uid = %device_uid,
                "device session held: the amount is below the price");
            return Ok(());
        }
        // The session exists: the device was reserved for it when the payment was first
        // authorized. Reserving again on the capture's `PaymentSucceeded` would, once that
        // session has ended, hand the device to a finished session for good (found by the
        // simulation, seed 42).
        let (_, session_version) = self.buses.sessions.load(&event.aggregate_id).await?;
        if session_version > 0 {
            return Ok(());
        }
        // An authorization cancelled (or released) before we got here starts nothing.
        if !payment.can_start_session() {
            tracing::info!(payment_id = %payment_id, status = %payment.status(),
                "device workflow: the payment can no longer start a session");
            return Ok(());
        }
        let command = DeviceCommand::ReserveDevice {
            session_id: payment_id,
            payment_id,
            actor: Actor::System,
            at: self.clock.now(),
        };
        let reserved = self
            .buses
            .devices
            .execute(device_uid, command, Self::metadata(event))
            .await;
        match reserved {
            Err(AggregateError::UserError(
                refusal @ (DeviceError::InMaintenance { .. } | DeviceError::QueueFull { .. }),
            )) => {
                tracing::info!(payment_id = %payment_id, refusal = %refusal,
                    "device workflow: no session can start; releasing the authorization");
                self.release_hold(
                    &payment,
                    format!("no session could start: {refusal}"),
                    Self::metadata(event),
                )
                .await
            }
            other => self.tolerate(other),
        }
    }

    /// A payment that can no longer be captured ends its session at once: one still
    /// waiting (queued, opened) is cancelled, one running is force-ended (the reconciler
    /// then switches the relay OFF). The reason is recorded on the session.
    async fn end_uncapturable(
        &self,
        event: &JournalEvent,
        payment: &Payment,
    ) -> anyhow::Result<()> {
        let reason = match (event.event_type.as_str(), payment.capture_failure()) {
            ("PaymentCaptureFailed", Some(failure)) => {
                format!("the card could not be charged: {failure}")
            }
            ("CheckoutExpired", _) => "the checkout expired unpaid".to_string(),
            _ => "the card authorization was cancelled at Stripe".to_string(),
        };
        let (session, _) = self.buses.sessions.load(&event.aggregate_id).await?;
        let now = self.clock.now();
        let command = match session.state() {
            Some(SessionState::Queued | SessionState::Opened) => SessionCommand::CancelSession {
                reason,
                actor: Actor::System,
                at: now,
            },
            Some(SessionState::Active | SessionState::Finishing) => {
                SessionCommand::ForceEndSession {
                    reason,
                    actor: Actor::System,
                    at: now,
                }
            }
            _ => return Ok(()),
        };
        tracing::warn!(payment_id = %event.aggregate_id, session_id = %event.aggregate_id,
            cause = %event.event_type, "device workflow: ending the session of a payment that cannot be captured");
        self.tolerate(
            self.buses
                .sessions
                .execute(&event.aggregate_id, command, Self::metadata(event))
                .await,
        )
    }

    /// Orders the release of `payment`'s authorization (one decision per payment: the
    /// Payment refuses a second), unless it is no longer held or its capture is under way.
    async fn release_hold(
        &self,
        payment: &Payment,
        reason: String,
        metadata: CommandMetadata,
    ) -> anyhow::Result<()> {
        let capture_under_way = payment.capture_ordered() && payment.capture_failure().is_none();
        if payment.status() != PaymentStatus::Authorized
            || capture_under_way
            || payment.cancellation_ordered()
        {
            return Ok(());
        }
        let Some(payment_id) = payment.payment_id() else {
            return Ok(());
        };
        let command = PaymentCommand::CancelAuthorization {
            reason,
            actor: Actor::System,
            at: self.clock.now(),
        };
        self.tolerate(
            self.buses
                .payments
                .execute(&payment_id.to_string(), command, metadata)
                .await,
        )
    }

    async fn on_device(&self, event: &JournalEvent) -> anyhow::Result<()> {
        let session_id = event
            .payload
            .get("session_id")
            .and_then(Value::as_str)
            .map(Uuid::parse_str)
            .transpose()?;
        let Some(session_id) = session_id else {
            return Ok(());
        };
        let queued = match event.event_type.as_str() {
            "DeviceReserved" => false,
            "DeviceReservationQueued" => true,
            _ => return Ok(()),
        };
        let terms = self.terms(&event.aggregate_id, session_id).await?;
        let command = if queued {
            SessionCommand::QueueSession {
                terms,
                actor: Actor::System,
                at: self.clock.now(),
            }
        } else {
            SessionCommand::OpenSession {
                terms,
                actor: Actor::System,
                at: self.clock.now(),
            }
        };
        self.tolerate(
            self.buses
                .sessions
                .execute(&session_id.to_string(), command, Self::metadata(event))
                .await,
        )
    }

    /// The session's terms from the device (relay, plan) and the payment (plan id).
    async fn terms(&self, device_uid: &str, session_id: Uuid) -> anyhow::Result<SessionTerms> {
        let payment_id = session_id;
        let (payment, _) = self.buses.payments.load(&payment_id.to_string()).await?;
        let locked_minutes = payment.locked_offer().map(|offer| offer.minutes);
        let Some(PaymentTarget::Device { plan_id, .. }) = payment.target().cloned() else {
            return Err(permanent(format!(
                "payment {payment_id} is not a device payment"
            )));
        };
        let (device, _) = self.buses.devices.load(device_uid).await?;
        // Missing data cannot appear by retrying the same event: park it for an operator
        // (who can restore the device or plan and retry) instead of halting every device.
        let relay = device
            .relay_target()
            .ok_or_else(|| permanent(format!("device {device_uid} has no relay")))?;
        // The plan's minutes as locked at checkout; a payment older than locked offers
        // falls back to the device's current plan of that id, and parks if it is gone.
        let minutes = match locked_minutes {
            Some(minutes) => minutes,
            None => device
                .plan(&plan_id)
                .map(|plan| plan.minutes)
                .ok_or_else(|| {
                    permanent(format!(
                    "device {device_uid} no longer has plan {plan_id}; restore the plan and retry"
                ))
                })?,
        };
        Ok(SessionTerms {
            session_id,
            payment_id,
            device_uid: device_uid.to_string(),
            relay,
            plan_id,
            plan_minutes: minutes,
            grace_seconds: self.grace_seconds,
        })
    }

    async fn on_session(&self, event: &JournalEvent) -> anyhow::Result<()> {
        let ended = matches!(
            event.event_type.as_str(),
            "SessionCompleted" | "SessionFailed" | "SessionForceEnded" | "SessionCancelled"
        );
        if event.event_type != "SessionActivated" && !ended {
            return Ok(());
        }
        let (session, _) = self.buses.sessions.load(&event.aggregate_id).await?;
        let Some(terms) = session.terms().cloned() else {
            return Ok(());
        };
        let payment = terms.payment_id.to_string();
        let metadata = Self::metadata(event);
        let (current, _) = self.buses.payments.load(&payment).await?;
        let capturable = current.status() == PaymentStatus::Authorized
            && current.capture_failure().is_none()
            && !current.cancellation_ordered();
        let started = session.started_at().is_some();
        if event.event_type == "SessionActivated" || (started && !current.capture_ordered()) {
            if capturable {
                let command = PaymentCommand::CapturePayment {
                    amount_to_capture: None,
                    actor: Actor::System,
                    at: self.clock.now(),
                };
                self.tolerate(
                    self.buses
                        .payments
                        .execute(&payment, command, metadata.clone())
                        .await,
                )?;
            } else if event.event_type == "SessionActivated" && !current.can_start_session() {
                // The relay came ON for a payment that can no longer be captured (it was
                // cancelled meanwhile): end it at once; its end releases what is left.
                let command = SessionCommand::ForceEndSession {
                    reason: format!(
                        "the payment can no longer be captured (it is {})",
                        current.status()
                    ),
                    actor: Actor::System,
                    at: self.clock.now(),
                };
                return self.tolerate(
                    self.buses
                        .sessions
                        .execute(&event.aggregate_id, command, metadata)
                        .await,
                );
            }
            if event.event_type == "SessionActivated" {
                return Ok(());
            }
        }
        if !started || current.capture_failure().is_some() {
            let reason = match (started, session.end_reason()) {
                (true, _) => "the capture failed; the hold is released".to_string(),
                (false, Some(why)) => {
                    format!("the device did not start ({why}); the guest is not charged")
                }
                (false, None) => "the device did not start; the guest is not charged".to_string(),
            };
            self.release_hold(&current, reason, metadata.clone())
                .await?;
        }
        let release = DeviceCommand::ReleaseDevice {
            session_id: terms.session_id,
            actor: Actor::System,
            at: self.clock.now(),
        };
        self.tolerate(
            self.buses
                .devices
                .execute(&terms.device_uid, release, metadata)
                .await,
        )
    }

    /// A business refusal is the aggregate's decision (already done, not applicable) and is
    /// in the journal or needs none; anything else is retried.
    fn tolerate<E: std::error::Error>(
        &self,
        result: Result<(), AggregateError<E>>,
    ) -> anyhow::Result<()> {
        match result {
            Ok(()) => Ok(()),
            Err(AggregateError::UserError(refusal)) => {
                tracing::info!(refusal = %refusal, "device workflow: command refused");
                Ok(())
            }
            Err(other) => Err(anyhow::anyhow!("{other}")),
        }
    }
}

#[async_trait]
impl Subscriber for DeviceSessionWorkflow {
    fn name(&self) -> &str {
        NAME
    }

    async fn apply(&self, _tx: &mut Tx, _event: &JournalEvent) -> anyhow::Result<()> {
        anyhow::bail!("the device workflow reacts outside transactions")
    }

    fn delivery(&self) -> Delivery {
        Delivery::Effects
    }

    async fn react(&self, event: &JournalEvent) -> anyhow::Result<()> {
        match event.aggregate_type.as_str() {
            "Payment" => self.on_payment(event).await,
            "Device" => self.on_device(event).await,
            "DeviceSession" => self.on_session(event).await,
            _ => Ok(()),
        }
    }
}
