//! Given / when / then tests for the DeviceSession aggregate, and the queue scenario that
//! spans Device and DeviceSession.

use std::sync::Arc;

use chrono::Duration;
use cqrs_es::event_sink::EventSink;
use cqrs_es::test::{AggregateTestExecutor, TestFramework};
use cqrs_es::Aggregate;
use uuid::Uuid;

use super::services::testing::{FakeRelayGateway, RelayCall};
use super::services::{RelayCommand, RelayError, RelayOutcome, RelayTarget};
use super::*;
use crate::device::{Device, DeviceCommand, DeviceEvent, DeviceServices, UsagePlan};
use crate::test_support::{assert_replay_reproduces, at, eur, run};
use crate::Actor;

type SessionTest = TestFramework<DeviceSession>;

const SESSION: Uuid = Uuid::from_u128(0x51);
const PAYMENT: Uuid = Uuid::from_u128(0x1051);
/// 30-minute plan, 2-minute grace.
const PLAN_MINUTES: u32 = 30;
const GRACE_SECONDS: u32 = 120;

fn fake() -> (Arc<FakeRelayGateway>, SessionServices) {
    let relay = Arc::new(FakeRelayGateway::new());
    (relay.clone(), SessionServices::new(relay))
}

fn given(events: Vec<SessionEvent>) -> AggregateTestExecutor<DeviceSession> {
    SessionTest::with(fake().1).given(events)
}

fn relay_target() -> RelayTarget {
    RelayTarget {
        shelly_device_id: "3c61052d7e90".to_owned(),
        channel: 0,
    }
}

fn terms_for(session_id: Uuid, payment_id: Uuid) -> SessionTerms {
    SessionTerms {
        session_id,
        payment_id,
        device_uid: "washer-1".to_owned(),
        relay: relay_target(),
        plan_id: "wash-30".to_owned(),
        plan_minutes: PLAN_MINUTES,
        grace_seconds: GRACE_SECONDS,
    }
}

fn terms() -> SessionTerms {
    terms_for(SESSION, PAYMENT)
}

fn opened(minute: i64) -> SessionEvent {
    SessionEvent::SessionOpened {
        terms: terms(),
        grace_ends_at: at(minute) + Duration::seconds(GRACE_SECONDS.into()),
        at: at(minute),
    }
}

fn queued(minute: i64) -> SessionEvent {
    SessionEvent::SessionQueued {
        terms: terms(),
        at: at(minute),
    }
}

fn on_requested(attempt: u32, minute: i64) -> SessionEvent {
    SessionEvent::RelayOnRequested {
        attempt,
        auto_off_seconds: u64::from(PLAN_MINUTES) * 60 + RELAY_AUTO_OFF_MARGIN_SECONDS,
        at: at(minute),
    }
}

fn activated(minute: i64) -> SessionEvent {
    SessionEvent::SessionActivated {
        started_at: at(minute),
        ends_at: at(minute + i64::from(PLAN_MINUTES)),
    }
}

/// A session opened at 0 whose relay came ON at 1: it runs until 31.
fn active() -> Vec<SessionEvent> {
    vec![
        opened(0),
        on_requested(1, 1),
        SessionEvent::RelayOnSucceeded {
            attempt: 1,
            at: at(1),
        },
        activated(1),
    ]
}

fn finishing() -> Vec<SessionEvent> {
    let mut events = active();
    events.extend([
        SessionEvent::SessionFinishing { at: at(31) },
        SessionEvent::RelayOffRequested {
            attempt: 1,
            at: at(31),
        },
        SessionEvent::RelayOffFailed {
            attempt: 1,
            error: "device offline".to_owned(),
            retryable: true,
            at: at(31),
        },
    ]);
    events
}

fn command(minute: i64) -> (Actor, chrono::DateTime<chrono::Utc>) {
    (Actor::System, at(minute))
}

fn switch_on(minute: i64) -> SessionCommand {
    let (actor, at) = command(minute);
    SessionCommand::SwitchRelayOn { actor, at }
}

fn finish(minute: i64) -> SessionCommand {
    let (actor, at) = command(minute);
    SessionCommand::FinishSession { actor, at }
}

fn force_end(minute: i64) -> SessionCommand {
    SessionCommand::ForceEndSession {
        reason: "guest reported smoke".to_owned(),
        actor: Actor::operator("alice"),
        at: at(minute),
    }
}

fn force_ended(minute: i64) -> SessionEvent {
    SessionEvent::SessionForceEnded {
        reason: "guest reported smoke".to_owned(),
        actor: Actor::operator("alice"),
        at: at(minute),
    }
}

fn off_attempt(attempt: u32, minute: i64) -> [SessionEvent; 2] {
    [
        SessionEvent::RelayOffRequested {
            attempt,
            at: at(minute),
        },
        SessionEvent::RelayOffSucceeded {
            attempt,
            at: at(minute),
        },
    ]
}

// --- Opening and queueing ---

#[tokio::test]
async fn opening_a_session_starts_its_grace_period() {
    SessionTest::with(fake().1)
        .given_no_previous_events()
        .when_async(SessionCommand::OpenSession {
            terms: terms(),
            actor: Actor::System,
            at: at(0),
        })
        .await
        .then_expect_events(vec![opened(0)]);
}

#[tokio::test]
async fn a_session_with_a_plan_longer_than_a_day_is_refused() {
    let mut long = terms();
    long.plan_minutes = MAX_PLAN_MINUTES + 1;
    SessionTest::with(fake().1)
        .given_no_previous_events()
        .when_async(SessionCommand::OpenSession {
            terms: long,
            actor: Actor::System,
            at: at(0),
        })
        .await
        .then_expect_error_message(
            "the session terms are invalid: the plan must last between 1 and 1440 minutes, not 1441",
        );
}

#[tokio::test]
async fn a_queued_session_opens_when_promoted_with_its_grace_counted_from_then() {
    SessionTest::with(fake().1)
        .given_no_previous_events()
        .when_async(SessionCommand::QueueSession {
            terms: terms(),
            actor: Actor::System,
            at: at(0),
        })
        .await
        .then_expect_events(vec![queued(0)]);
    given(vec![queued(0)])
        .when_async(SessionCommand::OpenQueuedSession {
            actor: Actor::System,
            at: at(40),
        })
        .await
        .then_expect_events(vec![opened(40)]);
}

#[tokio::test]
async fn opening_a_queued_session_with_the_same_terms_promotes_it() {
    given(vec![queued(0)])
        .when_async(SessionCommand::OpenSession {
            terms: terms(),
            actor: Actor::System,
            at: at(40),
        })
        .await
        .then_expect_events(vec![opened(40)]);
    given(vec![queued(0), opened(40)])
        .when_async(SessionCommand::OpenSession {
            terms: terms(),
            actor: Actor::System,
            at: at(41),
        })
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn a_queued_session_never_switches_the_relay_on() {
    let (relay, services) = fake();
    SessionTest::with(services)
        .given(vec![queued(0)])
        .when_async(switch_on(1))
        .await
        .then_expect_error(SessionError::CannotSwitchOn {
            state: SessionState::Queued,
        });
    assert!(relay.calls().is_empty());
}

// --- Relay ON and the countdown ---

#[tokio::test]
async fn the_countdown_starts_at_relay_confirmation_not_at_payment() {
    // Paid and opened at minute 0; the relay confirmed ON at minute 1: the 30 minutes run
    // from minute 1 to minute 31.
    let (relay, services) = fake();
    SessionTest::with(services)
        .given(vec![opened(0)])
        .when_async(switch_on(1))
        .await
        .then_expect_events(active()[1..].to_vec());
    assert_eq!(
        relay.calls(),
        vec![RelayCall::Switch(RelayCommand {
            shelly_device_id: "3c61052d7e90".to_owned(),
            channel: 0,
            on: true,
            auto_off_seconds: Some(30 * 60 + RELAY_AUTO_OFF_MARGIN_SECONDS),
        })]
    );
}

#[tokio::test]
async fn a_failed_relay_on_is_recorded_and_the_session_keeps_waiting() {
    let (relay, services) = fake();
    relay.queue_switch(Err(RelayError::retryable("device offline")));
    SessionTest::with(services)
        .given(vec![opened(0)])
        .when_async(switch_on(1))
        .await
        .then_expect_events(vec![
            on_requested(1, 1),
            SessionEvent::RelayOnFailed {
                attempt: 1,
                error: "device offline".to_owned(),
                retryable: true,
                at: at(1),
            },
        ]);
}

#[tokio::test]
async fn a_relay_that_stays_off_after_on_counts_as_a_failed_attempt() {
    let (relay, services) = fake();
    relay.queue_switch(Ok(RelayOutcome { is_on: false }));
    SessionTest::with(services)
        .given(vec![opened(0)])
        .when_async(switch_on(1))
        .await
        .then_expect_events(vec![
            on_requested(1, 1),
            SessionEvent::RelayOnFailed {
                attempt: 1,
                error: "the relay reported OFF after an ON command".to_owned(),
                retryable: true,
                at: at(1),
            },
        ]);
}

#[tokio::test]
async fn a_relay_that_refuses_for_good_fails_the_session() {
    let (relay, services) = fake();
    relay.queue_switch(Err(RelayError::permanent("device not found")));
    SessionTest::with(services)
        .given(vec![opened(0)])
        .when_async(switch_on(1))
        .await
        .then_expect_events(vec![
            on_requested(1, 1),
            SessionEvent::RelayOnFailed {
                attempt: 1,
                error: "device not found".to_owned(),
                retryable: false,
                at: at(1),
            },
            SessionEvent::SessionFailed {
                reason: "the relay refused to switch ON: device not found".to_owned(),
                at: at(1),
            },
        ]);
}

/// Found by the simulation (seed 693): the first ON's answer was lost but the relay came
/// on; the retry was refused for good, the session failed, and the relay stayed ON until
/// the sweep. A session failing after an ON that may have applied now switches OFF.
#[tokio::test]
async fn a_session_failing_after_a_lost_on_answer_switches_the_relay_off() {
    let (relay, services) = fake();
    relay.queue_switch(Err(RelayError::permanent(
        "the relay is locked by its owner",
    )));
    let lost = SessionEvent::RelayOnFailed {
        attempt: 1,
        error: "Shelly's answer was lost".to_owned(),
        retryable: true,
        at: at(0),
    };
    let [off_requested, off_succeeded] = off_attempt(1, 1);
    SessionTest::with(services)
        .given(vec![opened(0), on_requested(1, 0), lost])
        .when_async(switch_on(1))
        .await
        .then_expect_events(vec![
            on_requested(2, 1),
            SessionEvent::RelayOnFailed {
                attempt: 2,
                error: "the relay is locked by its owner".to_owned(),
                retryable: false,
                at: at(1),
            },
            SessionEvent::SessionFailed {
                reason: "the relay refused to switch ON: the relay is locked by its owner"
                    .to_owned(),
                at: at(1),
            },
            off_requested,
            off_succeeded,
        ]);
}

#[tokio::test]
async fn switching_on_after_the_grace_period_is_refused() {
    given(vec![opened(0)])
        .when_async(switch_on(2))
        .await
        .then_expect_error(SessionError::GracePeriodOver {
            grace_ends_at: at(2),
        });
}

#[tokio::test]
async fn re_asserting_on_during_an_active_session_keeps_its_end_and_times_auto_off_to_it() {
    let (relay, services) = fake();
    SessionTest::with(services)
        .given(active())
        .when_async(switch_on(21))
        .await
        .then_expect_events(vec![
            SessionEvent::RelayOnRequested {
                attempt: 2,
                auto_off_seconds: 10 * 60 + RELAY_AUTO_OFF_MARGIN_SECONDS,
                at: at(21),
            },
            SessionEvent::RelayOnSucceeded {
                attempt: 2,
                at: at(21),
            },
        ]);
    assert_eq!(relay.calls().len(), 1);
}

#[tokio::test]
async fn a_lost_on_answer_is_confirmed_by_a_status_read_and_starts_the_countdown() {
    let (relay, services) = fake();
    relay.queue_status(Ok(RelayOutcome { is_on: true }));
    let history = vec![
        opened(0),
        on_requested(1, 1),
        SessionEvent::RelayOnFailed {
            attempt: 1,
            error: "timeout".to_owned(),
            retryable: true,
            at: at(1),
        },
    ];
    let (actor, now) = command(1);
    SessionTest::with(services)
        .given(history)
        .when_async(SessionCommand::CheckRelay { actor, at: now })
        .await
        .then_expect_events(vec![
            SessionEvent::RelayStateObserved {
                is_on: true,
                at: at(1),
            },
            activated(1),
        ]);
    assert_eq!(relay.calls(), vec![RelayCall::Status(relay_target())]);
}

// --- Cancellation ---

#[tokio::test]
async fn a_session_whose_relay_never_came_on_is_cancelled() {
    let (relay, services) = fake();
    SessionTest::with(services)
        .given(vec![opened(0)])
        .when_async(SessionCommand::CancelSession {
            reason: "the relay never came ON within the grace period".to_owned(),
            actor: Actor::System,
            at: at(2),
        })
        .await
        .then_expect_events(vec![SessionEvent::SessionCancelled {
            reason: "the relay never came ON within the grace period".to_owned(),
            at: at(2),
        }]);
    assert!(relay.calls().is_empty());
}

#[tokio::test]
async fn a_started_session_cannot_be_cancelled_only_force_ended() {
    given(active())
        .when_async(SessionCommand::CancelSession {
            reason: "refund".to_owned(),
            actor: Actor::System,
            at: at(5),
        })
        .await
        .then_expect_error(SessionError::NotCancellable {
            state: SessionState::Active,
        });
}

// --- Finishing ---

#[tokio::test]
async fn finishing_before_the_time_is_up_is_refused() {
    given(active())
        .when_async(finish(30))
        .await
        .then_expect_error(SessionError::NotOverYet { ends_at: at(31) });
}

#[tokio::test]
async fn finishing_sends_off_and_completes_when_the_relay_confirms() {
    let mut expected = vec![SessionEvent::SessionFinishing { at: at(31) }];
    expected.extend(off_attempt(1, 31));
    expected.push(SessionEvent::SessionCompleted { at: at(31) });
    given(active())
        .when_async(finish(31))
        .await
        .then_expect_events(expected);
}

#[tokio::test]
async fn a_relay_off_failure_keeps_the_session_finishing_until_it_succeeds() {
    let (relay, services) = fake();
    relay.queue_switch(Err(RelayError::retryable("device offline")));
    SessionTest::with(services)
        .given(active())
        .when_async(finish(31))
        .await
        .then_expect_events(finishing()[4..].to_vec());
    let (relay, services) = fake();
    relay.queue_switch(Err(RelayError::permanent("device offline")));
    SessionTest::with(services)
        .given(finishing())
        .when_async(finish(32))
        .await
        .then_expect_events(vec![
            SessionEvent::RelayOffRequested {
                attempt: 2,
                at: at(32),
            },
            SessionEvent::RelayOffFailed {
                attempt: 2,
                error: "device offline".to_owned(),
                retryable: false,
                at: at(32),
            },
        ]);
    let mut expected = off_attempt(2, 33).to_vec();
    expected.push(SessionEvent::SessionCompleted { at: at(33) });
    given(finishing())
        .when_async(finish(33))
        .await
        .then_expect_events(expected);
}

#[tokio::test]
async fn a_status_read_showing_the_relay_off_completes_a_finishing_session() {
    let (relay, services) = fake();
    relay.queue_status(Ok(RelayOutcome { is_on: false }));
    let (actor, now) = command(33);
    SessionTest::with(services)
        .given(finishing())
        .when_async(SessionCommand::CheckRelay { actor, at: now })
        .await
        .then_expect_events(vec![
            SessionEvent::RelayStateObserved {
                is_on: false,
                at: at(33),
            },
            SessionEvent::SessionCompleted { at: at(33) },
        ]);
}

// --- Force end, from every live state ---

#[tokio::test]
async fn force_end_of_a_queued_session_touches_no_relay() {
    let (relay, services) = fake();
    SessionTest::with(services)
        .given(vec![queued(0)])
        .when_async(force_end(5))
        .await
        .then_expect_events(vec![force_ended(5)]);
    assert!(relay.calls().is_empty());
}

#[tokio::test]
async fn force_end_of_an_opened_session_records_who_and_why() {
    given(vec![opened(0)])
        .when_async(force_end(1))
        .await
        .then_expect_events(vec![force_ended(1)]);
}

#[tokio::test]
async fn force_end_of_an_active_session_switches_the_relay_off() {
    let mut expected = vec![force_ended(10)];
    expected.extend(off_attempt(1, 10));
    given(active())
        .when_async(force_end(10))
        .await
        .then_expect_events(expected);
}

#[tokio::test]
async fn force_end_of_a_finishing_session_ends_it_even_if_off_fails_again() {
    let (relay, services) = fake();
    relay.queue_switch(Err(RelayError::retryable("device offline")));
    SessionTest::with(services)
        .given(finishing())
        .when_async(force_end(35))
        .await
        .then_expect_events(vec![
            force_ended(35),
            SessionEvent::RelayOffRequested {
                attempt: 2,
                at: at(35),
            },
            SessionEvent::RelayOffFailed {
                attempt: 2,
                error: "device offline".to_owned(),
                retryable: true,
                at: at(35),
            },
        ]);
}

#[tokio::test]
async fn force_ending_a_session_that_already_ended_is_refused() {
    let mut completed = active();
    completed.push(SessionEvent::SessionCompleted { at: at(31) });
    given(completed)
        .when_async(force_end(40))
        .await
        .then_expect_error_message("session already ended (completed)");
}

// --- The countdown as the reconciler sees it ---

#[test]
fn the_desired_relay_state_follows_the_replayed_countdown() {
    let mut session = DeviceSession::default();
    session.apply(opened(0));
    assert!(
        session.desired_relay_on(at(1)),
        "waiting for ON during grace"
    );
    assert!(!session.desired_relay_on(at(2)), "grace over");
    for event in active().into_iter().skip(1) {
        session.apply(event);
    }
    assert!(session.desired_relay_on(at(30)));
    assert_eq!(session.remaining_seconds(at(30)), Some(60));
    assert!(!session.desired_relay_on(at(31)));
    assert_eq!(session.remaining_seconds(at(45)), Some(0));
    session.apply(force_ended(20));
    assert!(!session.desired_relay_on(at(20)));
}

#[tokio::test]
async fn replaying_a_session_reproduces_its_state_exactly() {
    let (relay, services) = fake();
    relay.queue_switch(Err(RelayError::retryable("timeout")));
    relay.queue_switch(Ok(RelayOutcome { is_on: true }));
    relay.queue_switch(Err(RelayError::retryable("device offline")));
    let commands = vec![
        SessionCommand::QueueSession {
            terms: terms(),
            actor: Actor::System,
            at: at(0),
        },
        SessionCommand::OpenQueuedSession {
            actor: Actor::System,
            at: at(10),
        },
        switch_on(10),
        switch_on(11),
        finish(41),
        finish(42),
    ];
    let (live, events) = run::<DeviceSession>(commands, &services).await;
    assert_eq!(live.state(), Some(SessionState::Completed));
    assert_eq!(live.started_at(), Some(at(11)));
    assert_eq!(live.ends_at(), Some(at(41)));
    assert_replay_reproduces(&live, &events);
}

// --- Device and sessions together ---

async fn execute<A: Aggregate>(
    aggregate: &mut A,
    command: A::Command,
    services: &A::Services,
) -> Vec<A::Event>
where
    A::Error: std::fmt::Debug,
{
    let sink = EventSink::default();
    aggregate.handle(command, services, &sink).await.unwrap();
    sink.collect().await
}

#[tokio::test]
async fn a_second_paid_session_is_queued_and_starts_only_after_the_first_completes() {
    // The workflow's part is played here by hand: Device decides, sessions follow.
    let (relay, session_services) = fake();
    let device_services = DeviceServices::new(relay.clone());
    let first = terms_for(Uuid::from_u128(1), Uuid::from_u128(101));
    let second = terms_for(Uuid::from_u128(2), Uuid::from_u128(102));
    let mut device = Device::default();
    let registration = DeviceCommand::RegisterDevice {
        device_uid: "washer-1".to_owned(),
        name: "Washer".to_owned(),
        location: "Lyon".to_owned(),
        time_zone: "Europe/Paris".to_owned(),
        shelly_device_id: "3c61052d7e90".to_owned(),
        shelly_channel: 0,
        plans: vec![UsagePlan {
            plan_id: "wash-30".to_owned(),
            name: "30 minutes".to_owned(),
            minutes: 30,
            price: eur(300),
        }],
        actor: Actor::operator("alice"),
        at: at(0),
    };
    execute(&mut device, registration, &device_services).await;
    let reserve = |terms: &SessionTerms, minute| DeviceCommand::ReserveDevice {
        session_id: terms.session_id,
        payment_id: terms.payment_id,
        actor: Actor::System,
        at: at(minute),
    };

    let answer = execute(&mut device, reserve(&first, 0), &device_services).await;
    assert!(matches!(answer[..], [DeviceEvent::DeviceReserved { .. }]));
    let mut first_session = DeviceSession::default();
    let open_first = SessionCommand::OpenSession {
        terms: first.clone(),
        actor: Actor::System,
        at: at(0),
    };
    execute(&mut first_session, open_first, &session_services).await;
    execute(&mut first_session, switch_on(1), &session_services).await;

    let answer = execute(&mut device, reserve(&second, 5), &device_services).await;
    assert!(matches!(
        answer[..],
        [DeviceEvent::DeviceReservationQueued { position: 1, .. }]
    ));
    let mut second_session = DeviceSession::default();
    let queue_second = SessionCommand::QueueSession {
        terms: second.clone(),
        actor: Actor::System,
        at: at(5),
    };
    execute(&mut second_session, queue_second, &session_services).await;
    assert!(!second_session.desired_relay_on(at(6)), "never two at once");

    execute(&mut first_session, finish(31), &session_services).await;
    assert_eq!(first_session.state(), Some(SessionState::Completed));
    let release = DeviceCommand::ReleaseDevice {
        session_id: first.session_id,
        actor: Actor::System,
        at: at(31),
    };
    let answer = execute(&mut device, release, &device_services).await;
    assert_eq!(
        answer.last(),
        Some(&DeviceEvent::DeviceReserved {
            session_id: second.session_id,
            payment_id: second.payment_id,
            from_queue: true,
            at: at(31),
        })
    );
    let promote = SessionCommand::OpenQueuedSession {
        actor: Actor::System,
        at: at(31),
    };
    execute(&mut second_session, promote, &session_services).await;
    execute(&mut second_session, switch_on(32), &session_services).await;
    assert_eq!(second_session.state(), Some(SessionState::Active));
    assert_eq!(second_session.ends_at(), Some(at(62)));
    assert_eq!(device.holder_session(), Some(second.session_id));
    assert!(relay.is_on());
}

// --- An OFF left unconfirmed by an ending (simulation seed 1541) ---

fn force_ended_with_off_refused() -> Vec<SessionEvent> {
    let mut events = active();
    events.extend([
        force_ended(10),
        SessionEvent::RelayOffRequested {
            attempt: 1,
            at: at(10),
        },
        SessionEvent::RelayOffFailed {
            attempt: 1,
            error: "429 rate limited".to_owned(),
            retryable: true,
            at: at(10),
        },
    ]);
    events
}

fn switch_off(minute: i64) -> SessionCommand {
    let (actor, at) = command(minute);
    SessionCommand::SwitchRelayOff { actor, at }
}

/// A force-end whose OFF met a Shelly rate limit left the relay ON until the 5-minute
/// sweep (seed 1541). The ended session now says its OFF is unconfirmed, and sending OFF
/// again confirms it.
#[tokio::test]
async fn a_force_end_whose_off_was_refused_sends_off_again_until_confirmed() {
    let mut session = DeviceSession::default();
    for event in force_ended_with_off_refused() {
        cqrs_es::Aggregate::apply(&mut session, event);
    }
    assert!(session.off_unconfirmed(), "the relay may still be ON");
    let [requested, succeeded] = off_attempt(2, 11);
    let (relay, services) = fake();
    SessionTest::with(services)
        .given(force_ended_with_off_refused())
        .when_async(switch_off(11))
        .await
        .then_expect_events(vec![requested.clone(), succeeded.clone()]);
    assert_eq!(relay.calls().len(), 1, "one OFF sent");

    for event in [requested, succeeded] {
        cqrs_es::Aggregate::apply(&mut session, event);
    }
    assert!(!session.off_unconfirmed());
}

/// Once the relay confirmed OFF (or for a session still live), sending OFF again changes
/// nothing and reaches no relay.
#[tokio::test]
async fn switching_off_again_is_a_no_op_once_confirmed_or_while_live() {
    let mut confirmed = force_ended_with_off_refused();
    confirmed.extend(off_attempt(2, 11));
    for history in [confirmed, active()] {
        let (relay, services) = fake();
        SessionTest::with(services)
            .given(history)
            .when_async(switch_off(12))
            .await
            .then_expect_events(vec![]);
        assert!(relay.calls().is_empty());
    }
}
