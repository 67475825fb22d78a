//! The DeviceSession aggregate: one paid use of a device, and the relay commands for it.
//!
//! The countdown starts when the relay is confirmed ON (`SessionActivated { started_at,
//! ends_at }`), never at payment, and `ends_at` is stored in that event: replaying the
//! stream gives the same countdown, and [`DeviceSession::desired_relay_on`] is a pure
//! function of the replayed state and an instant, which is what the reconciler compares.
//!
//! A session never holds the device on its own authority: the Device aggregate decides
//! (`DeviceReserved` or `DeviceReservationQueued`) and a workflow opens or queues the
//! session accordingly, so two sessions are never ON at once.

use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::commands::SessionCommand;
use super::error::SessionError;
use super::events::{SessionEvent, SessionState, SessionTerms};
use super::services::{RelayCommand, RelayOutcome, SessionServices};
use crate::Actor;

/// Seconds the relay's own auto-off timer runs past the paid end. The reconciler switches
/// OFF at `ends_at`; the device turns itself off a minute later if Latchkey could not.
pub const RELAY_AUTO_OFF_MARGIN_SECONDS: u64 = 60;

/// The longest plan a session accepts: one day. Longer is almost certainly a unit mistake.
pub const MAX_PLAN_MINUTES: u32 = 24 * 60;

/// The longest grace period: an hour for the relay to come ON is already generous.
pub const MAX_GRACE_SECONDS: u32 = 60 * 60;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceSession {
    terms: Option<SessionTerms>,
    state: Option<SessionState>,
    queued_at: Option<DateTime<Utc>>,
    opened_at: Option<DateTime<Utc>>,
    grace_ends_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    ends_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    /// The last state we asked the relay for.
    relay_commanded: Option<bool>,
    /// The last state the relay reported.
    relay_observed: Option<bool>,
    on_attempts: u32,
    off_attempts: u32,
    last_relay_error: Option<String>,
    end_reason: Option<String>,
    ended_by: Option<Actor>,
}

impl Aggregate for DeviceSession {
    const TYPE: &'static str = "DeviceSession";
    type Command = SessionCommand;
    type Event = SessionEvent;
    type Error = SessionError;
    type Services = SessionServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let events = self.decide(command, services).await?;
        for event in events {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            SessionEvent::SessionQueued { terms, at } => {
                self.terms = Some(terms);
                self.state = Some(SessionState::Queued);
                self.queued_at = Some(at);
            }
            SessionEvent::SessionOpened {
                terms,
                grace_ends_at,
                at,
            } => {
                self.terms = Some(terms);
                self.state = Some(SessionState::Opened);
                self.opened_at = Some(at);
                self.grace_ends_at = Some(grace_ends_at);
            }
            SessionEvent::RelayOnRequested { attempt, .. } => {
                self.on_attempts = attempt;
                self.relay_commanded = Some(true);
            }
            SessionEvent::RelayOnSucceeded { .. } => {
                self.relay_observed = Some(true);
                self.last_relay_error = None;
            }
            SessionEvent::RelayOffRequested { attempt, .. } => {
                self.off_attempts = attempt;
                self.relay_commanded = Some(false);
            }
            SessionEvent::RelayOffSucceeded { .. } => {
                self.relay_observed = Some(false);
                self.last_relay_error = None;
            }
            SessionEvent::RelayOnFailed { error, .. }
            | SessionEvent::RelayOffFailed { error, .. } => {
                self.last_relay_error = Some(error);
            }
            SessionEvent::RelayStateObserved { is_on, .. } => self.relay_observed = Some(is_on),
            SessionEvent::SessionActivated {
                started_at,
                ends_at,
            } => {
                debug_assert!(ends_at > started_at);
                self.state = Some(SessionState::Active);
                self.started_at = Some(started_at);
                self.ends_at = Some(ends_at);
            }
            SessionEvent::SessionFinishing { .. } => self.state = Some(SessionState::Finishing),
            SessionEvent::SessionCompleted { at } => self.end(SessionState::Completed, at),
            SessionEvent::SessionCancelled { reason, at } => {
                self.end(SessionState::Cancelled, at);
                self.end_reason = Some(reason);
            }
            SessionEvent::SessionFailed { reason, at } => {
                self.end(SessionState::Failed, at);
                self.end_reason = Some(reason);
            }
            SessionEvent::SessionForceEnded { reason, actor, at } => {
                self.end(SessionState::ForceEnded, at);
                self.end_reason = Some(reason);
                self.ended_by = Some(actor);
            }
        }
    }
}

/// Read accessors for the application and the reconciler.
impl DeviceSession {
    /// Whether the relay should be ON at `now`: while an opened session waits for it
    /// (within the grace period) and while an active session's time runs. Everything else,
    /// including `finishing`, wants it OFF.
    pub fn desired_relay_on(&self, now: DateTime<Utc>) -> bool {
        match self.state {
            Some(SessionState::Opened) => self.grace_ends_at.is_some_and(|end| now < end),
            Some(SessionState::Active) => self.ends_at.is_some_and(|end| now < end),
            _ => false,
        }
    }

    /// Seconds of paid time left at `now`: counted only once active, zero once over.
    pub fn remaining_seconds(&self, now: DateTime<Utc>) -> Option<i64> {
        match self.state {
            Some(SessionState::Active) => self.ends_at.map(|end| (end - now).num_seconds().max(0)),
            Some(SessionState::Finishing | SessionState::Completed) => Some(0),
            _ => None,
        }
    }

    /// Whether the grace period is over at `now` for a session still waiting for ON.
    pub fn grace_expired(&self, now: DateTime<Utc>) -> bool {
        self.state == Some(SessionState::Opened) && self.grace_ends_at.is_some_and(|end| now >= end)
    }

    pub fn state(&self) -> Option<SessionState> {
        self.state
    }

    pub fn terms(&self) -> Option<&SessionTerms> {
        self.terms.as_ref()
    }

    pub fn opened_at(&self) -> Option<DateTime<Utc>> {
        self.opened_at
    }

    pub fn grace_ends_at(&self) -> Option<DateTime<Utc>> {
        self.grace_ends_at
    }

    pub fn started_at(&self) -> Option<DateTime<Utc>> {
        self.started_at
    }

    pub fn ends_at(&self) -> Option<DateTime<Utc>> {
        self.ends_at
    }

    pub fn ended_at(&self) -> Option<DateTime<Utc>> {
        self.ended_at
    }

    pub fn relay_commanded(&self) -> Option<bool> {
        self.relay_commanded
    }

    pub fn relay_observed(&self) -> Option<bool> {
        self.relay_observed
    }

    /// Whether the session ended with an OFF the relay never confirmed: the relay may still
    /// be ON, so the reconciler keeps sending OFF (found by the simulation, seed 1541: a
    /// force-end whose OFF met a rate limit left the relay ON until the 5-minute sweep).
    pub fn off_unconfirmed(&self) -> bool {
        self.state.is_some_and(SessionState::is_ended)
            && self.relay_commanded == Some(false)
            && self.relay_observed != Some(false)
    }

    pub fn last_relay_error(&self) -> Option<&str> {
        self.last_relay_error.as_deref()
    }

    pub fn end_reason(&self) -> Option<&str> {
        self.end_reason.as_deref()
    }

    pub fn ended_by(&self) -> Option<&Actor> {
        self.ended_by.as_ref()
    }

    fn end(&mut self, state: SessionState, at: DateTime<Utc>) {
        self.state = Some(state);
        self.ended_at = Some(at);
    }
}

/// Deciding.
impl DeviceSession {
    async fn decide(
        &self,
        command: SessionCommand,
        services: &SessionServices,
    ) -> Result<Vec<SessionEvent>, SessionError> {
        match command {
            SessionCommand::OpenSession { terms, at, .. } => self.open(terms, at),
            SessionCommand::QueueSession { terms, at, .. } => self.queue(terms, at),
            SessionCommand::OpenQueuedSession { at, .. } => self.open_queued(at),
            SessionCommand::SwitchRelayOn { at, .. } => self.switch_on(at, services).await,
            SessionCommand::FinishSession { at, .. } => self.finish(at, services).await,
            SessionCommand::SwitchRelayOff { at, .. } => {
                if !self.off_unconfirmed() {
                    return Ok(vec![]);
                }
                Ok(self.switch_off(at, services).await.0)
            }
            SessionCommand::CheckRelay { at, .. } => self.check_relay(at, services).await,
            SessionCommand::CancelSession { reason, at, .. } => {
                self.cancel(reason, at, services).await
            }
            SessionCommand::ForceEndSession { reason, actor, at } => {
                self.force_end(reason, actor, at, services).await
            }
        }
    }

    fn open(
        &self,
        terms: SessionTerms,
        at: DateTime<Utc>,
    ) -> Result<Vec<SessionEvent>, SessionError> {
        if let Some(state) = self.state {
            let same_terms = self.terms.as_ref() == Some(&terms);
            // A workflow may answer every `DeviceReserved` with `OpenSession`, whether the
            // session was queued first or not: for a queued session it is the promotion.
            return match state {
                SessionState::Queued if same_terms => self.open_queued(at),
                SessionState::Opened if same_terms => Ok(vec![]),
                _ => Err(SessionError::AlreadyCreated { state }),
            };
        }
        validate_terms(&terms)?;
        let grace_ends_at = at + Duration::seconds(i64::from(terms.grace_seconds));
        Ok(vec![SessionEvent::SessionOpened {
            terms,
            grace_ends_at,
            at,
        }])
    }

    fn queue(
        &self,
        terms: SessionTerms,
        at: DateTime<Utc>,
    ) -> Result<Vec<SessionEvent>, SessionError> {
        if let Some(state) = self.state {
            if state == SessionState::Queued && self.terms.as_ref() == Some(&terms) {
                return Ok(vec![]);
            }
            return Err(SessionError::AlreadyCreated { state });
        }
        validate_terms(&terms)?;
        Ok(vec![SessionEvent::SessionQueued { terms, at }])
    }

    fn open_queued(&self, at: DateTime<Utc>) -> Result<Vec<SessionEvent>, SessionError> {
        let (terms, state) = self.created()?;
        match state {
            SessionState::Queued => {
                let grace_ends_at = at + Duration::seconds(i64::from(terms.grace_seconds));
                Ok(vec![SessionEvent::SessionOpened {
                    terms: terms.clone(),
                    grace_ends_at,
                    at,
                }])
            }
            // The promotion was already handled (a workflow saw the same fact twice).
            SessionState::Opened | SessionState::Active | SessionState::Finishing => Ok(vec![]),
            ended => Err(SessionError::AlreadyEnded { state: ended }),
        }
    }

    async fn switch_on(
        &self,
        at: DateTime<Utc>,
        services: &SessionServices,
    ) -> Result<Vec<SessionEvent>, SessionError> {
        let (terms, state) = self.created()?;
        let remaining_seconds = match (state, self.grace_ends_at, self.ends_at) {
            (SessionState::Opened, Some(grace_ends_at), _) => {
                if at >= grace_ends_at {
                    return Err(SessionError::GracePeriodOver { grace_ends_at });
                }
                u64::from(terms.plan_minutes) * 60
            }
            (SessionState::Active, _, Some(ends_at)) => {
                if at >= ends_at {
                    return Err(SessionError::TimeIsUp { ends_at });
                }
                u64::try_from((ends_at - at).num_seconds()).unwrap_or(0)
            }
            _ => return Err(SessionError::CannotSwitchOn { state }),
        };
        let attempt = self.on_attempts + 1;
        let auto_off_seconds = remaining_seconds + RELAY_AUTO_OFF_MARGIN_SECONDS;
        let mut events = vec![SessionEvent::RelayOnRequested {
            attempt,
            auto_off_seconds,
            at,
        }];
        let command = RelayCommand {
            shelly_device_id: terms.relay.shelly_device_id.clone(),
            channel: terms.relay.channel,
            on: true,
            auto_off_seconds: Some(auto_off_seconds),
        };
        match services.relay.switch(command).await {
            Ok(RelayOutcome { is_on: true }) => {
                events.push(SessionEvent::RelayOnSucceeded { attempt, at });
                if state == SessionState::Opened {
                    events.push(activation(terms, at));
                }
            }
            Ok(RelayOutcome { is_on: false }) => events.push(SessionEvent::RelayOnFailed {
                attempt,
                error: "the relay reported OFF after an ON command".to_owned(),
                retryable: true,
                at,
            }),
            Err(error) => {
                let retryable = error.is_retryable();
                events.push(SessionEvent::RelayOnFailed {
                    attempt,
                    error: error.message.clone(),
                    retryable,
                    at,
                });
                // Only a session that never started fails: an active one keeps its paid
                // time and is still switched OFF at the end.
                if !retryable && state == SessionState::Opened {
                    events.push(SessionEvent::SessionFailed {
                        reason: format!("the relay refused to switch ON: {}", error.message),
                        at,
                    });
                    // An earlier ON whose answer was lost may have switched the relay on
                    // (found by the simulation, seed 693): switch it OFF now rather than
                    // leave it to the sweep minutes later.
                    if self.relay_commanded == Some(true) {
                        events.extend(self.switch_off(at, services).await.0);
                    }
                }
            }
        }
        Ok(events)
    }

    async fn finish(
        &self,
        at: DateTime<Utc>,
        services: &SessionServices,
    ) -> Result<Vec<SessionEvent>, SessionError> {
        let (_, state) = self.created()?;
        let mut events = Vec::new();
        match (state, self.ends_at) {
            (SessionState::Active, Some(ends_at)) => {
                if at < ends_at {
                    return Err(SessionError::NotOverYet { ends_at });
                }
                events.push(SessionEvent::SessionFinishing { at });
            }
            (SessionState::Finishing, _) => {}
            (SessionState::Completed, _) => return Ok(vec![]),
            _ => return Err(SessionError::NotFinishable { state }),
        }
        if crate::planted::active(crate::planted::Bug::RelayLeftOnAtEnd) {
            events.push(SessionEvent::SessionCompleted { at });
            return Ok(events);
        }
        let (off_events, switched_off) = self.switch_off(at, services).await;
        events.extend(off_events);
        if switched_off {
            events.push(SessionEvent::SessionCompleted { at });
        }
        Ok(events)
    }

    async fn check_relay(
        &self,
        at: DateTime<Utc>,
        services: &SessionServices,
    ) -> Result<Vec<SessionEvent>, SessionError> {
        let (terms, state) = self.created()?;
        if !matches!(
            state,
            SessionState::Opened | SessionState::Active | SessionState::Finishing
        ) {
            return Err(SessionError::NotHoldingRelay { state });
        }
        let RelayOutcome { is_on } =
            services
                .relay
                .status(terms.relay.clone())
                .await
                .map_err(|error| SessionError::RelayUnreachable {
                    message: error.message,
                })?;
        let mut events = Vec::new();
        if self.relay_observed != Some(is_on) {
            events.push(SessionEvent::RelayStateObserved { is_on, at });
        }
        match state {
            // An OFF that failed (a timeout, say) may still have reached the relay.
            SessionState::Finishing if !is_on => {
                events.push(SessionEvent::SessionCompleted { at });
            }
            // Likewise an ON whose answer was lost: the relay is ON, so the time starts.
            SessionState::Opened
                if is_on && self.relay_commanded == Some(true) && !self.grace_expired(at) =>
            {
                events.push(activation(terms, at));
            }
            _ => {}
        }
        Ok(events)
    }

    async fn cancel(
        &self,
        reason: String,
        at: DateTime<Utc>,
        services: &SessionServices,
    ) -> Result<Vec<SessionEvent>, SessionError> {
        let (_, state) = self.created()?;
        match state {
            SessionState::Queued | SessionState::Opened => {}
            SessionState::Cancelled => return Ok(vec![]),
            SessionState::Active | SessionState::Finishing => {
                return Err(SessionError::NotCancellable { state })
            }
            ended => return Err(SessionError::AlreadyEnded { state: ended }),
        }
        let mut events = vec![SessionEvent::SessionCancelled { reason, at }];
        // An ON request whose answer was lost may have switched the relay on anyway.
        if self.relay_commanded == Some(true) {
            events.extend(self.switch_off(at, services).await.0);
        }
        Ok(events)
    }

    async fn force_end(
        &self,
        reason: String,
        actor: Actor,
        at: DateTime<Utc>,
        services: &SessionServices,
    ) -> Result<Vec<SessionEvent>, SessionError> {
        let (_, state) = self.created()?;
        if state.is_ended() {
            return Err(SessionError::AlreadyEnded { state });
        }
        let mut events = vec![SessionEvent::SessionForceEnded { reason, actor, at }];
        // The session ends whatever the relay says; if OFF fails here, the reconciler
        // sends it again until the relay confirms (`off_unconfirmed`).
        let relay_may_be_on = matches!(state, SessionState::Active | SessionState::Finishing)
            || self.relay_commanded == Some(true);
        if relay_may_be_on {
            events.extend(self.switch_off(at, services).await.0);
        }
        Ok(events)
    }

    /// One OFF attempt: its events, and whether the relay confirmed OFF.
    async fn switch_off(
        &self,
        at: DateTime<Utc>,
        services: &SessionServices,
    ) -> (Vec<SessionEvent>, bool) {
        let attempt = self.off_attempts + 1;
        let mut events = vec![SessionEvent::RelayOffRequested { attempt, at }];
        let Some(terms) = &self.terms else {
            return (events, false);
        };
        let command = RelayCommand {
            shelly_device_id: terms.relay.shelly_device_id.clone(),
            channel: terms.relay.channel,
            on: false,
            auto_off_seconds: None,
        };
        let (outcome, switched_off) = match services.relay.switch(command).await {
            Ok(RelayOutcome { is_on: false }) => {
                (SessionEvent::RelayOffSucceeded { attempt, at }, true)
            }
            Ok(RelayOutcome { is_on: true }) => (
                SessionEvent::RelayOffFailed {
                    attempt,
                    error: "the relay reported ON after an OFF command".to_owned(),
                    retryable: true,
                    at,
                },
                false,
            ),
            Err(error) => (
                SessionEvent::RelayOffFailed {
                    attempt,
                    retryable: error.is_retryable(),
                    error: error.message,
                    at,
                },
                false,
            ),
        };
        events.push(outcome);
        (events, switched_off)
    }

    fn created(&self) -> Result<(&SessionTerms, SessionState), SessionError> {
        match (&self.terms, self.state) {
            (Some(terms), Some(state)) => Ok((terms, state)),
            _ => Err(SessionError::NotCreated),
        }
    }
}

/// The relay is confirmed ON at `at`: the paid time runs from here.
fn activation(terms: &SessionTerms, at: DateTime<Utc>) -> SessionEvent {
    SessionEvent::SessionActivated {
        started_at: at,
        ends_at: at + Duration::minutes(i64::from(terms.plan_minutes)),
    }
}

fn validate_terms(terms: &SessionTerms) -> Result<(), SessionError> {
    let invalid = |reason: String| Err(SessionError::InvalidTerms { reason });
    if terms.device_uid.is_empty() || terms.plan_id.is_empty() {
        return invalid("the device and the plan must be named".to_owned());
    }
    if terms.relay.shelly_device_id.is_empty() {
        return invalid("the Shelly device id must not be empty".to_owned());
    }
    if terms.plan_minutes == 0 || terms.plan_minutes > MAX_PLAN_MINUTES {
        return invalid(format!(
            "the plan must last between 1 and {MAX_PLAN_MINUTES} minutes, not {}",
            terms.plan_minutes
        ));
    }
    if terms.grace_seconds == 0 || terms.grace_seconds > MAX_GRACE_SECONDS {
        return invalid(format!(
            "the grace period must be between 1 and {MAX_GRACE_SECONDS} seconds, not {}",
            terms.grace_seconds
        ));
    }
    Ok(())
}
