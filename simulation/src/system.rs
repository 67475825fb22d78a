//! The system's own loops, mirrored step for step from the application: the device-session
//! and door-access workflows (`src/workflows`), the scheduled jobs (`workflows::schedule`)
//! and the reconciler's pass and sweep (`src/reconciler`, deciding with the real
//! [`decide`]). They run here one step at a time under the seeded scheduler instead of as
//! tokio tasks over SQL; each decision table is the application's, line for line, and the
//! module docs of each mirrored file are the specification kept in sync.

use chrono::Duration;
use latchkey::reconciler::{decide, Decision};
use latchkey::workflows::door_access::compensation_refund_request_id;
use latchkey_aggregates::device::{Device, DeviceCommand};
use latchkey_aggregates::door::{CompensationRule, DoorCommand, MAX_ISSUE_ATTEMPTS};
use latchkey_aggregates::payment::{Payment, PaymentCommand, PaymentStatus, PaymentTarget};
use latchkey_aggregates::session::{DeviceSession, SessionCommand, SessionState, SessionTerms};
use latchkey_aggregates::Actor;
use serde_json::Value;
use uuid::Uuid;

use crate::store::Entry;
use crate::world::{
    backoff_seconds, door_target, Job, Refusal, World, ACCESS_DEADLINE_SECONDS, GRACE_SECONDS,
    RECONCILER_INTERVAL_SECONDS, SWEEP_INTERVAL_SECONDS, WORKFLOW_RETRY_BASE_SECONDS,
    WORKFLOW_RETRY_MAX_SECONDS,
};

/// What became of asking for a door code (the mirror of `door_access::IssueOutcome`).
#[derive(Debug, PartialEq, Eq)]
enum Issued {
    Done,
    InMaintenance,
    /// Not paid, held for an operator, or disputed: no code for now.
    NotNow,
}

/// Stripe's answer to a capture or a release as the jobs record it; `Err` is retried.
fn stripe_answer(
    answer: Result<(), latchkey_aggregates::payment::services::GatewayError>,
) -> Result<latchkey_aggregates::payment::StripeAnswer, String> {
    use latchkey_aggregates::payment::services::GatewayErrorKind;
    use latchkey_aggregates::payment::StripeAnswer;
    match answer {
        Ok(()) => Ok(StripeAnswer::Accepted),
        Err(error) if error.kind == GatewayErrorKind::Retryable => Err(error.message),
        Err(error) => Ok(StripeAnswer::Refused {
            reason: error.message,
        }),
    }
}

/// A workflow reaction's result: `Err` is retried (the checkpoint does not move).
type Reaction = Result<(), String>;

/// `tolerate` of the workflows: a business refusal is the aggregate's decision.
fn tolerate(result: Result<Vec<Entry>, Refusal>) -> Reaction {
    match result {
        Ok(_) | Err(Refusal::User(_)) => Ok(()),
        Err(other) => Err(format!("{other:?}")),
    }
}

impl World {
    // ----- workflow:device_sessions ---------------------------------------------------

    pub fn device_workflow_step(&mut self) {
        let position = self.device_workflow.position;
        let Some(entry) = self.store.journal.get(position).cloned() else {
            return;
        };
        let result = match entry.aggregate_type {
            "Payment" => self.device_on_payment(&entry),
            "Device" => self.device_on_device(&entry),
            "DeviceSession" => self.device_on_session(&entry),
            _ => Ok(()),
        };
        let now = self.now;
        let checkpoint = &mut self.device_workflow;
        advance(
            checkpoint,
            result,
            now,
            &entry,
            &mut self.trace,
            "workflow:device_sessions",
        );
    }

    fn device_on_payment(&mut self, event: &Entry) -> Reaction {
        let status = event.payload.get("status").and_then(Value::as_str);
        let reserve = matches!(
            event.event_type.as_str(),
            "PaymentAuthorized" | "PaymentSucceeded" | "PaymentAccessGranted"
        );
        let end_reason = match event.event_type.as_str() {
            "RefundRecorded" if status == Some("refunded") => {
                Some("the payment was refunded in full")
            }
            "PaymentDisputed" => Some("the payment is disputed"),
            _ => None,
        };
        let not_capturable = matches!(
            event.event_type.as_str(),
            "PaymentCaptureFailed" | "PaymentCancelled" | "CheckoutExpired"
        );
        if !reserve && end_reason.is_none() && !not_capturable {
            return Ok(());
        }
        let payment_id: Uuid = event.aggregate_id.parse().map_err(|e| format!("{e}"))?;
        let (payment, _) = self.store.load::<Payment>(&event.aggregate_id);
        let Some(PaymentTarget::Device { device_uid, .. }) = payment.target().cloned() else {
            return Ok(());
        };
        if not_capturable {
            return self.end_uncapturable(event);
        }
        if let Some(reason) = end_reason {
            let command = SessionCommand::ForceEndSession {
                reason: reason.into(),
                actor: Actor::System,
                at: self.now,
            };
            return tolerate(self.session(&event.aggregate_id, command));
        }
        if payment.is_access_held() {
            return Ok(());
        }
        if self.store.version::<DeviceSession>(&event.aggregate_id) > 0 {
            return Ok(());
        }
        if !payment.can_start_session() {
            return Ok(());
        }
        let command = DeviceCommand::ReserveDevice {
            session_id: payment_id,
            payment_id,
            actor: Actor::System,
            at: self.now,
        };
        match self.device(&device_uid, command) {
            // Refused (maintenance, queue full): no session will start on this hold.
            Err(Refusal::User(message))
                if message.contains("maintenance") || message.contains("sessions waiting") =>
            {
                self.release_hold(&payment)
            }
            other => tolerate(other),
        }
    }

    /// The mirror of `DeviceSessionWorkflow::release_hold`.
    fn release_hold(&mut self, payment: &Payment) -> Reaction {
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
            reason: "the device did not start; the guest is not charged".into(),
            actor: Actor::System,
            at: self.now,
        };
        tolerate(self.payment(payment_id, command))
    }

    /// The mirror of `DeviceSessionWorkflow::end_uncapturable`.
    fn end_uncapturable(&mut self, event: &Entry) -> Reaction {
        if event.event_type == "PaymentCaptureFailed"
            && latchkey_aggregates::planted::active(
                latchkey_aggregates::planted::Bug::CaptureFailureDropped,
            )
        {
            return Ok(());
        }
        let (session, _) = self.store.load::<DeviceSession>(&event.aggregate_id);
        let reason = format!(
            "the payment can no longer be captured ({})",
            event.event_type
        );
        let command = match session.state() {
            Some(SessionState::Queued | SessionState::Opened) => SessionCommand::CancelSession {
                reason,
                actor: Actor::System,
                at: self.now,
            },
            Some(SessionState::Active | SessionState::Finishing) => {
                SessionCommand::ForceEndSession {
                    reason,
                    actor: Actor::System,
                    at: self.now,
                }
            }
            _ => return Ok(()),
        };
        tolerate(self.session(&event.aggregate_id, command))
    }

    fn device_on_device(&mut self, event: &Entry) -> Reaction {
        let session_id = event
            .payload
            .get("session_id")
            .and_then(Value::as_str)
            .map(Uuid::parse_str)
            .transpose()
            .map_err(|e| format!("{e}"))?;
        let Some(session_id) = session_id else {
            return Ok(());
        };
        let queued = match event.event_type.as_str() {
            "DeviceReserved" => false,
            "DeviceReservationQueued" => true,
            _ => return Ok(()),
        };
        let terms = self.terms(&event.aggregate_id, session_id)?;
        let command = if queued {
            SessionCommand::QueueSession {
                terms,
                actor: Actor::System,
                at: self.now,
            }
        } else {
            SessionCommand::OpenSession {
                terms,
                actor: Actor::System,
                at: self.now,
            }
        };
        tolerate(self.session(&session_id.to_string(), command))
    }

    fn terms(&self, device_uid: &str, session_id: Uuid) -> Result<SessionTerms, String> {
        let (payment, _) = self.store.load::<Payment>(&session_id.to_string());
        let Some(PaymentTarget::Device { plan_id, .. }) = payment.target().cloned() else {
            return Err(format!("payment {session_id} is not a device payment"));
        };
        let (device, _) = self.store.load::<Device>(device_uid);
        let relay = device
            .relay_target()
            .ok_or_else(|| format!("device {device_uid} has no relay"))?;
        // The plan's minutes as locked at checkout; only a payment older than locked
        // offers reads the device's current plan.
        let minutes = match payment.locked_offer().map(|offer| offer.minutes) {
            Some(minutes) => minutes,
            None => device
                .plan(&plan_id)
                .map(|plan| plan.minutes)
                .ok_or_else(|| format!("device {device_uid} no longer has plan {plan_id}"))?,
        };
        Ok(SessionTerms {
            session_id,
            payment_id: session_id,
            device_uid: device_uid.to_string(),
            relay,
            plan_id,
            plan_minutes: minutes,
            grace_seconds: GRACE_SECONDS,
        })
    }

    fn device_on_session(&mut self, event: &Entry) -> Reaction {
        let ended = matches!(
            event.event_type.as_str(),
            "SessionCompleted" | "SessionFailed" | "SessionForceEnded" | "SessionCancelled"
        );
        if event.event_type != "SessionActivated" && !ended {
            return Ok(());
        }
        let (session, _) = self.store.load::<DeviceSession>(&event.aggregate_id);
        let Some(terms) = session.terms().cloned() else {
            return Ok(());
        };
        let (current, _) = self.store.load::<Payment>(&terms.payment_id.to_string());
        let capturable = current.status() == PaymentStatus::Authorized
            && current.capture_failure().is_none()
            && !current.cancellation_ordered();
        let started = session.started_at().is_some();
        if event.event_type == "SessionActivated" || (started && !current.capture_ordered()) {
            if capturable {
                let command = PaymentCommand::CapturePayment {
                    amount_to_capture: None,
                    actor: Actor::System,
                    at: self.now,
                };
                tolerate(self.payment(terms.payment_id, command))?;
            } else if event.event_type == "SessionActivated" && !current.can_start_session() {
                let command = SessionCommand::ForceEndSession {
                    reason: format!(
                        "the payment can no longer be captured (it is {})",
                        current.status()
                    ),
                    actor: Actor::System,
                    at: self.now,
                };
                return tolerate(self.session(&event.aggregate_id, command));
            }
            if event.event_type == "SessionActivated" {
                return Ok(());
            }
        }
        // `Bug::HoldKeptAfterSessionFailed` plants the old rule back: only a cancelled
        // session released its hold.
        let releases_hold = if latchkey_aggregates::planted::active(
            latchkey_aggregates::planted::Bug::HoldKeptAfterSessionFailed,
        ) {
            event.event_type == "SessionCancelled"
        } else {
            // `Bug::CaptureFailureDropped` plants the old reaction back: a refused capture
            // neither ended the session nor released the hold.
            let capture_failure_handled = current.capture_failure().is_some()
                && !latchkey_aggregates::planted::active(
                    latchkey_aggregates::planted::Bug::CaptureFailureDropped,
                );
            !started || capture_failure_handled
        };
        if releases_hold {
            self.release_hold(&current)?;
        }
        let release = DeviceCommand::ReleaseDevice {
            session_id: terms.session_id,
            actor: Actor::System,
            at: self.now,
        };
        tolerate(self.device(&terms.device_uid, release))
    }

    // ----- workflow:door_access -------------------------------------------------------

    pub fn door_workflow_step(&mut self) {
        let position = self.door_workflow.position;
        let Some(entry) = self.store.journal.get(position).cloned() else {
            return;
        };
        let result = match entry.aggregate_type {
            "Payment" => self.door_on_payment(&entry),
            "Door" => self.door_on_door(&entry),
            _ => Ok(()),
        };
        let now = self.now;
        let checkpoint = &mut self.door_workflow;
        advance(
            checkpoint,
            result,
            now,
            &entry,
            &mut self.trace,
            "workflow:door_access",
        );
    }

    fn door_on_payment(&mut self, event: &Entry) -> Reaction {
        let payment_id: Uuid = event.aggregate_id.parse().map_err(|e| format!("{e}"))?;
        // The mirror of `workflows::captures` (its own subscriber in the application; the
        // authorization deadline is days away, beyond a simulated run).
        let payment_job = match event.event_type.as_str() {
            "PaymentCaptureOrdered" => Some((
                format!("capture:{payment_id}"),
                Job::Capture {
                    payment: payment_id,
                },
            )),
            "PaymentCancellationOrdered" => Some((
                format!("cancel-authorization:{payment_id}"),
                Job::CancelAuthorization {
                    payment: payment_id,
                },
            )),
            _ => None,
        };
        if let Some((key, job)) = payment_job {
            let due = self.now;
            self.schedule(key, due, job);
            return Ok(());
        }
        // The mirror of `workflows::refunds` (its own subscriber in the application).
        if event.event_type == "RefundOrdered" {
            let request = event
                .payload
                .get("refund_request_id")
                .and_then(Value::as_str)
                .and_then(|id| Uuid::parse_str(id).ok())
                .ok_or("RefundOrdered without refund_request_id")?;
            let due = self.now;
            self.schedule(
                format!("refund:{request}"),
                due,
                Job::SubmitRefund {
                    payment: payment_id,
                    request,
                },
            );
            return Ok(());
        }
        let status = event.payload.get("status").and_then(Value::as_str);
        let (payment, _) = self.store.load::<Payment>(&event.aggregate_id);
        let Some(door) = door_target(&payment) else {
            return Ok(());
        };
        let revoke = |reason: &str| DoorCommand::RevokeAccessCode {
            payment_id,
            reason: reason.to_string(),
            actor: Actor::System,
            at: self.now,
        };
        let command = match event.event_type.as_str() {
            "PaymentSucceeded" => {
                let paid_at = event
                    .payload
                    .get("at")
                    .cloned()
                    .and_then(|at| serde_json::from_value(at).ok())
                    .unwrap_or(self.now);
                self.schedule(
                    format!("access-deadline:{payment_id}"),
                    paid_at + Duration::seconds(ACCESS_DEADLINE_SECONDS),
                    Job::AccessDeadline {
                        door: door.clone(),
                        payment: payment_id,
                        paid_at,
                    },
                );
                if self.issue_code(&door, payment_id)? == Issued::InMaintenance {
                    let due = self.now
                        + Duration::seconds(backoff_seconds(
                            WORKFLOW_RETRY_BASE_SECONDS,
                            WORKFLOW_RETRY_MAX_SECONDS,
                            1,
                        ));
                    self.schedule(
                        format!("issue:{door}:{payment_id}:maintenance"),
                        due,
                        Job::Issue {
                            door,
                            payment: payment_id,
                        },
                    );
                }
                return Ok(());
            }
            "PaymentAccessGranted" => {
                self.issue_code(&door, payment_id)?;
                return Ok(());
            }
            "PaymentDisputed" => revoke("the payment is disputed"),
            "RefundRecorded" if status == Some("refunded") => {
                revoke("the payment was refunded in full")
            }
            _ => return Ok(()),
        };
        tolerate(self.door(&door, command))
    }

    /// The mirror of `door_access::issue_code`: a code for a paid payment that is neither
    /// held nor disputed, with the minutes locked at checkout.
    fn issue_code(&mut self, door: &str, payment_id: Uuid) -> Result<Issued, String> {
        let (payment, _) = self.store.load::<Payment>(&payment_id.to_string());
        let paid = matches!(
            payment.status(),
            PaymentStatus::Succeeded | PaymentStatus::PartiallyRefunded
        );
        if !paid || payment.is_access_held() || payment.is_disputed() {
            return Ok(Issued::NotNow);
        }
        let command = DoorCommand::IssueAccessCode {
            locked_minutes: payment.locked_offer().map(|offer| offer.minutes),
            payment_id,
            actor: Actor::System,
            at: self.now,
        };
        match self.door(door, command) {
            Ok(_) => Ok(Issued::Done),
            Err(Refusal::User(message)) if message.contains("maintenance") => {
                Ok(Issued::InMaintenance)
            }
            Err(Refusal::User(_)) => Ok(Issued::Done),
            Err(other) => Err(format!("{other:?}")),
        }
    }

    /// The mirror of `door_access::compensate`: the Door decides, for a payment still paid.
    fn compensate(
        &mut self,
        door: &str,
        payment_id: Uuid,
        rule: CompensationRule,
        paid_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Reaction {
        let (payment, _) = self.store.load::<Payment>(&payment_id.to_string());
        if !matches!(
            payment.status(),
            PaymentStatus::Succeeded | PaymentStatus::PartiallyRefunded
        ) {
            return Ok(());
        }
        let command = DoorCommand::CompensateAccess {
            payment_id,
            rule,
            refund_request_id: compensation_refund_request_id(payment_id),
            paid_at: paid_at.or_else(|| payment.succeeded_at()),
            deadline_seconds: ACCESS_DEADLINE_SECONDS as u64,
            actor: Actor::System,
            at: self.now,
        };
        tolerate(self.door(door, command))
    }

    fn door_on_door(&mut self, event: &Entry) -> Reaction {
        let door = event.aggregate_id.clone();
        let payload = &event.payload;
        let payment = payload
            .get("payment_id")
            .and_then(Value::as_str)
            .and_then(|id| Uuid::parse_str(id).ok());
        let attempt = payload.get("attempt").and_then(Value::as_u64).unwrap_or(1) as u32;
        let base = WORKFLOW_RETRY_BASE_SECONDS;
        let max = WORKFLOW_RETRY_MAX_SECONDS;
        match (event.event_type.as_str(), payment) {
            ("AccessCodeIssueFailed", Some(payment)) => {
                let retryable = payload.get("retryable").and_then(Value::as_bool) == Some(true);
                if !retryable || attempt >= MAX_ISSUE_ATTEMPTS {
                    let rule = if retryable {
                        CompensationRule::IssueAttemptsExhausted
                    } else {
                        CompensationRule::IssueRefused
                    };
                    return self.compensate(&door, payment, rule, None);
                }
                let due = self.now + Duration::seconds(backoff_seconds(base, max, attempt));
                self.schedule(
                    format!("issue:{door}:{payment}:{attempt}"),
                    due,
                    Job::Issue { door, payment },
                );
            }
            ("AccessCompensationDecided", Some(payment)) => {
                let refund_request_id = payload
                    .get("refund_request_id")
                    .and_then(Value::as_str)
                    .and_then(|id| Uuid::parse_str(id).ok())
                    .ok_or("AccessCompensationDecided without refund_request_id")?;
                let command = PaymentCommand::RequestRefund {
                    refund_request_id,
                    amount: None,
                    reason: "automatic refund".into(),
                    actor: Actor::System,
                    at: self.now,
                };
                tolerate(self.payment(payment, command))?;
                self.schedule_stray_search(door, payment);
            }
            ("AccessCodeRevoked", Some(payment)) if payload["passcode_id"].is_null() => {
                self.schedule_stray_search(door, payment);
            }
            ("DoorMaintenanceEnded", _) => {
                let prefix = format!("issue:{door}:");
                let now = self.now;
                for (key, (due, _, _)) in self.jobs.iter_mut() {
                    if key.starts_with(&prefix) && *due > now {
                        *due = now;
                    }
                }
            }
            ("AccessCodeRevocationPending", Some(payment)) => {
                let due = self.now + Duration::seconds(backoff_seconds(base, max, attempt));
                let reason = payload
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or("revocation retry")
                    .to_string();
                self.schedule(
                    format!("revoke:{door}:{payment}:{attempt}"),
                    due,
                    Job::Revoke {
                        door,
                        payment,
                        reason,
                    },
                );
            }
            ("AccessCodeIssued", Some(payment)) => {
                let valid_to = payload
                    .get("valid_to")
                    .cloned()
                    .and_then(|value| serde_json::from_value(value).ok())
                    .ok_or("AccessCodeIssued without valid_to")?;
                self.schedule(
                    format!("expire:{door}:{payment}"),
                    valid_to,
                    Job::Expire { door },
                );
            }
            _ => {}
        }
        Ok(())
    }

    /// The mirror of `DoorAccessWorkflow::remove_stray_passcodes`.
    fn schedule_stray_search(&mut self, door: String, payment: Uuid) {
        let due = self.now;
        self.schedule(
            format!("stray:{door}:{payment}"),
            due,
            Job::RemoveStray { door, payment },
        );
    }

    fn schedule(&mut self, key: String, due: chrono::DateTime<chrono::Utc>, job: Job) {
        self.jobs.entry(key).or_insert((due, 0, job));
    }

    // ----- scheduled jobs -------------------------------------------------------------

    pub fn jobs_step(&mut self) {
        let now = self.now;
        let due: Vec<(String, u32, Job)> = {
            let mut due: Vec<_> = self
                .jobs
                .iter()
                .filter(|(_, (at, _, _))| *at <= now)
                .map(|(key, (at, attempts, job))| (*at, key.clone(), *attempts, job.clone()))
                .collect();
            due.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
            due.into_iter()
                .map(|(_, key, attempts, job)| (key, attempts, job))
                .collect()
        };
        for (key, attempts, job) in due {
            let payment_job = match job {
                Job::SubmitRefund { payment, request } => {
                    Some(self.submit_refund(payment, request))
                }
                Job::Capture { payment } => Some(self.submit_capture(payment)),
                Job::CancelAuthorization { payment } => Some(self.submit_cancellation(payment)),
                Job::AccessDeadline {
                    ref door,
                    payment,
                    paid_at,
                } => Some(self.compensate(
                    door,
                    payment,
                    CompensationRule::DeadlinePassed,
                    Some(paid_at),
                )),
                Job::Issue { ref door, payment } => Some(match self.issue_code(door, payment) {
                    Ok(Issued::InMaintenance) => Err(format!("door {door} is in maintenance")),
                    Ok(_) => Ok(()),
                    Err(error) => Err(error),
                }),
                _ => None,
            };
            if let Some(outcome) = payment_job {
                match outcome {
                    Ok(()) => {
                        self.jobs.remove(&key);
                    }
                    Err(error) => {
                        let retry = now + Duration::seconds(backoff_seconds(2, 300, attempts + 1));
                        self.trace.note(
                            now,
                            &format!("job {key} failed ({error}); again at {retry}"),
                        );
                        self.jobs.insert(key, (retry, attempts + 1, job));
                    }
                }
                continue;
            }
            let (door, command) = match job.clone() {
                Job::Revoke {
                    door,
                    payment,
                    reason,
                } => (
                    door,
                    DoorCommand::RevokeAccessCode {
                        payment_id: payment,
                        reason,
                        actor: Actor::System,
                        at: now,
                    },
                ),
                Job::Expire { door } => (
                    door,
                    DoorCommand::ExpireAccessCodes {
                        actor: Actor::System,
                        at: now,
                    },
                ),
                Job::RemoveStray { door, payment } => (
                    door,
                    DoorCommand::RemoveStrayPasscodes {
                        payment_id: payment,
                        actor: Actor::System,
                        at: now,
                    },
                ),
                Job::SubmitRefund { .. }
                | Job::Capture { .. }
                | Job::CancelAuthorization { .. }
                | Job::AccessDeadline { .. }
                | Job::Issue { .. } => continue,
            };
            let result = match self.door(&door, command) {
                Ok(_) => Ok(()),
                Err(Refusal::User(message)) if message.contains("maintenance") => Err(message),
                // The mirror of the job runner's retry on `DoorError::LockUnreachable`.
                Err(Refusal::User(message)) if message.contains("could not be asked") => {
                    Err(message)
                }
                Err(Refusal::User(_)) => Ok(()),
                Err(other) => Err(format!("{other:?}")),
            };
            match result {
                Ok(()) => {
                    self.jobs.remove(&key);
                }
                Err(error) => {
                    let attempt = attempts + 1;
                    let retry = now + Duration::seconds(backoff_seconds(2, 300, attempt));
                    self.trace.note(
                        now,
                        &format!("job {key} failed ({error}); again at {retry}"),
                    );
                    self.jobs.insert(key, (retry, attempt, job));
                }
            }
        }
    }

    /// The mirror of `workflows::refunds::submit_refund`.
    fn submit_refund(&mut self, payment_id: Uuid, request_id: Uuid) -> Result<(), String> {
        use latchkey_aggregates::payment::services::GatewayErrorKind;
        use latchkey_aggregates::payment::RefundSubmissionOutcome;
        let (payment, _) = self.store.load::<Payment>(&payment_id.to_string());
        let Some(request) = payment.refund_submission(request_id) else {
            return Ok(());
        };
        let answer = futures::executor::block_on(self.payment_gateway().refund(request));
        self.deliver_racing_webhooks();
        let outcome = match answer {
            Ok(receipt) => RefundSubmissionOutcome::Accepted {
                stripe_refund_id: receipt.refund_id,
                amount: receipt.amount,
                refund_status: receipt.status,
            },
            Err(error) if error.kind == GatewayErrorKind::Retryable => return Err(error.message),
            Err(error) => RefundSubmissionOutcome::Refused {
                reason: error.message,
            },
        };
        let command = PaymentCommand::RecordRefundSubmission {
            refund_request_id: request_id,
            outcome,
            actor: Actor::System,
            at: self.now,
        };
        match self.payment(payment_id, command) {
            Ok(_) | Err(Refusal::User(_)) => Ok(()),
            Err(other) => Err(format!("{other:?}")),
        }
    }

    /// The mirror of `workflows::captures::submit_capture`.
    fn submit_capture(&mut self, payment_id: Uuid) -> Result<(), String> {
        let (payment, _) = self.store.load::<Payment>(&payment_id.to_string());
        let Some(request) = payment.capture_submission() else {
            return Ok(());
        };
        let answer = futures::executor::block_on(self.payment_gateway().capture(request));
        self.deliver_racing_webhooks();
        let outcome = stripe_answer(answer)?;
        let command = PaymentCommand::RecordCaptureSubmission {
            outcome,
            actor: Actor::System,
            at: self.now,
        };
        match self.payment(payment_id, command) {
            Ok(_) | Err(Refusal::User(_)) => Ok(()),
            Err(other) => Err(format!("{other:?}")),
        }
    }

    /// The mirror of `workflows::captures::submit_cancellation`.
    fn submit_cancellation(&mut self, payment_id: Uuid) -> Result<(), String> {
        let (payment, _) = self.store.load::<Payment>(&payment_id.to_string());
        let Some(request) = payment.cancellation_submission() else {
            return Ok(());
        };
        let answer =
            futures::executor::block_on(self.payment_gateway().cancel_authorization(request));
        self.deliver_racing_webhooks();
        let outcome = stripe_answer(answer)?;
        let command = PaymentCommand::RecordCancellationSubmission {
            outcome,
            actor: Actor::System,
            at: self.now,
        };
        match self.payment(payment_id, command) {
            Ok(_) | Err(Refusal::User(_)) => Ok(()),
            Err(other) => Err(format!("{other:?}")),
        }
    }

    // ----- the reconciler -------------------------------------------------------------

    fn uncapturable(&self, session: &DeviceSession) -> bool {
        let (Some(SessionState::Opened), Some(terms)) = (session.state(), session.terms()) else {
            return false;
        };
        let (payment, _) = self.store.load::<Payment>(&terms.payment_id.to_string());
        payment.is_started() && !payment.can_start_session()
    }

    fn device_held_by_another(&self, session: &DeviceSession, session_id: &str) -> bool {
        let Some(terms) = session.terms() else {
            return false;
        };
        let (device, _) = self.store.load::<Device>(&terms.device_uid);
        device
            .holder_session()
            .is_some_and(|holder| holder.to_string() != session_id)
    }

    pub fn reconciler_step(&mut self) {
        let now = self.now;
        let just_started = std::mem::take(&mut self.reconciler.just_started);
        self.reconciler.seen_position = self.store.journal.len();
        let mut next_due = now + Duration::seconds(RECONCILER_INTERVAL_SECONDS);
        let sessions: Vec<String> = self.store.sessions.keys().cloned().collect();
        for session_id in sessions {
            let (mut session, _) = self.store.load::<DeviceSession>(&session_id);
            // An ended session's relay is not read back (the session no longer holds it);
            // its OFF is simply sent again.
            if just_started
                && !matches!(
                    decide(&session, now),
                    Decision::NotLive | Decision::SwitchOff
                )
            {
                let _ = self.session(
                    &session_id,
                    SessionCommand::CheckRelay {
                        actor: Actor::System,
                        at: now,
                    },
                );
                session = self.store.load::<DeviceSession>(&session_id).0;
            }
            let retry_at = self.reconciler.retry.get(&session_id).map(|(_, at)| *at);
            let command = match decide(&session, now) {
                Decision::NotLive => {
                    self.reconciler.retry.remove(&session_id);
                    continue;
                }
                Decision::Wait { until } => {
                    next_due = earliest(next_due, until);
                    continue;
                }
                _ if retry_at.is_some_and(|at| now < at) => {
                    next_due = earliest(next_due, retry_at);
                    next_due = earliest(next_due, session.grace_ends_at());
                    continue;
                }
                Decision::Cancel => SessionCommand::CancelSession {
                    reason: "the relay did not come ON within the grace period".into(),
                    actor: Actor::System,
                    at: now,
                },
                // The mirror of `Reconciler::uncapturable`: no first ON on a payment that
                // can no longer be captured.
                Decision::SwitchOn if self.uncapturable(&session) => {
                    SessionCommand::CancelSession {
                        reason: "the payment can no longer be captured".into(),
                        actor: Actor::System,
                        at: now,
                    }
                }
                Decision::SwitchOn => SessionCommand::SwitchRelayOn {
                    actor: Actor::System,
                    at: now,
                },
                Decision::Finish => SessionCommand::FinishSession {
                    actor: Actor::System,
                    at: now,
                },
                // The mirror of `Reconciler::device_held_by_another`.
                Decision::SwitchOff if self.device_held_by_another(&session, &session_id) => {
                    self.reconciler.retry.remove(&session_id);
                    continue;
                }
                Decision::SwitchOff => SessionCommand::SwitchRelayOff {
                    actor: Actor::System,
                    at: now,
                },
            };
            let outcome = self.session(&session_id, command);
            let (after, _) = self.store.load::<DeviceSession>(&session_id);
            let stuck = match outcome {
                Ok(_) | Err(Refusal::User(_)) => {
                    (after.last_relay_error().is_some()
                        && matches!(
                            after.state(),
                            Some(SessionState::Opened | SessionState::Finishing)
                        ))
                        || after.off_unconfirmed()
                }
                Err(_) => true,
            };
            if stuck {
                let failures = self
                    .reconciler
                    .retry
                    .get(&session_id)
                    .map_or(0, |(n, _)| *n)
                    + 1;
                let at = now + Duration::seconds(backoff_seconds(2, 30, failures));
                self.reconciler
                    .retry
                    .insert(session_id.clone(), (failures, at));
                next_due = earliest(next_due, Some(at));
                next_due = earliest(next_due, after.grace_ends_at());
            } else {
                self.reconciler.retry.remove(&session_id);
                next_due = earliest(next_due, after.ends_at().filter(|end| *end > now));
                next_due = earliest(next_due, after.grace_ends_at().filter(|end| *end > now));
            }
        }
        let sweep_due = self
            .reconciler
            .last_sweep
            .is_none_or(|last| now >= last + Duration::seconds(SWEEP_INTERVAL_SECONDS));
        if sweep_due {
            self.reconciler.last_sweep = Some(now);
            self.trace.note(now, "sweep");
            self.sweep();
        }
        self.reconciler.next_pass = Some(next_due.max(now + Duration::milliseconds(10)));
    }

    fn sweep(&mut self) {
        let free: Vec<String> = self
            .store
            .devices
            .iter()
            .filter(|(_, stream)| stream.state.holder_session().is_none())
            .map(|(uid, _)| uid.clone())
            .collect();
        for device_uid in free {
            let (device, _) = self.store.load::<Device>(&device_uid);
            let Some(target) = device.relay_target() else {
                continue;
            };
            if device.manual_on_stands_at(self.now) {
                continue;
            }
            let status = futures::executor::block_on(self.session_services_relay().status(target));
            let on = match status {
                Ok(outcome) => outcome.is_on,
                Err(error) => {
                    self.trace.note(
                        self.now,
                        &format!("sweep: could not read the relay of {device_uid}: {error}"),
                    );
                    continue;
                }
            };
            if !on {
                continue;
            }
            let command = DeviceCommand::SwitchRelay {
                on: false,
                reason: "reconciliation: the relay was ON with no paying session".into(),
                actor: Actor::System,
                at: self.now,
            };
            let _ = self.device(&device_uid, command);
        }
    }
}

fn earliest(
    current: chrono::DateTime<chrono::Utc>,
    candidate: Option<chrono::DateTime<chrono::Utc>>,
) -> chrono::DateTime<chrono::Utc> {
    candidate.map_or(current, |candidate| current.min(candidate))
}

/// Moves a subscriber's checkpoint after a reaction, or schedules the retry.
fn advance(
    checkpoint: &mut crate::world::Checkpoint,
    result: Reaction,
    now: chrono::DateTime<chrono::Utc>,
    entry: &Entry,
    trace: &mut crate::trace::Trace,
    name: &str,
) {
    match result {
        Ok(()) => {
            checkpoint.position += 1;
            checkpoint.failures = 0;
            checkpoint.not_before = None;
            checkpoint.last_error = None;
        }
        Err(error) => {
            checkpoint.failures += 1;
            let pause = backoff_seconds(1, 30, checkpoint.failures);
            checkpoint.not_before = Some(now + Duration::seconds(pause));
            trace.note(
                now,
                &format!(
                    "{name} failed on #{} {}: {error}",
                    entry.position, entry.event_type
                ),
            );
            checkpoint.last_error = Some(format!(
                "#{} {} {}: {error}",
                entry.position, entry.event_type, entry.aggregate_id
            ));
        }
    }
}
