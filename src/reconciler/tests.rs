//! Property: the reconciler's decision for a session equals the one a fresh replay of the
//! session's events gives, and the one its read-model row gives, for 1,000 random
//! histories (commands with random relay answers at random instants), at instants around
//! every deadline of the history.
//!
//! Three independent derivations are compared with [`decide`] on the live aggregate:
//! a fresh fold of the events after a trip through JSON (what the reconciler loads from
//! the journal), a hand-written fold of the events written here (the specification), and
//! the `sessions` projection's row after the real projection ran over the events in SQLite
//! (what the reconciler seeds its watch list from). Likewise for the Device: the
//! `catalogue_devices` row the sweep starts from agrees with a replay of the Device.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use latchkey_aggregates::device::{
    Device, DeviceCommand, DeviceEvent, DeviceServices, DeviceStatus, UsagePlan,
};
use latchkey_aggregates::session::services::testing::FakeRelayGateway;
use latchkey_aggregates::session::services::{
    RelayError, RelayOutcome, RelayTarget, SessionServices,
};
use latchkey_aggregates::session::{DeviceSession, SessionCommand, SessionEvent, SessionTerms};
use latchkey_aggregates::{Actor, Currency, Money};
use latchkey_projections::catalogue::CatalogueProjection;
use latchkey_projections::sessions::SessionsProjection;
use latchkey_projections::{Conn, EventRecord, Projection};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use sqlx::{Connection, SqliteConnection};
use uuid::Uuid;

use super::{decide, Decision};

/// What the relay answers to one command.
#[derive(Clone, Copy, Debug)]
enum Answer {
    On,
    Off,
    Retryable,
    Permanent,
}

#[derive(Clone, Copy, Debug)]
enum Step {
    OpenQueued,
    SwitchOn(Answer),
    Finish(Answer),
    Check(Answer),
    Cancel(Answer),
    ForceEnd(Answer),
    SwitchOff(Answer),
}

#[derive(Clone, Debug)]
struct History {
    queued_first: bool,
    plan_minutes: u32,
    grace_seconds: u32,
    /// Seconds since the previous step, and the step.
    steps: Vec<(i64, Step)>,
    /// Extra instants to judge at, in seconds after the last step.
    probes: Vec<i64>,
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        4 => Just(Answer::On),
        2 => Just(Answer::Off),
        2 => Just(Answer::Retryable),
        1 => Just(Answer::Permanent),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        1 => Just(Step::OpenQueued),
        5 => answer().prop_map(Step::SwitchOn),
        4 => answer().prop_map(Step::Finish),
        3 => answer().prop_map(Step::Check),
        1 => answer().prop_map(Step::Cancel),
        1 => answer().prop_map(Step::ForceEnd),
        2 => answer().prop_map(Step::SwitchOff),
    ]
}

fn history() -> impl Strategy<Value = History> {
    (
        any::<bool>(),
        1_u32..=90,
        1_u32..=300,
        prop::collection::vec((0_i64..=1_200, step()), 0..12),
        prop::collection::vec(-3_600_i64..=7_200, 1..4),
    )
        .prop_map(
            |(queued_first, plan_minutes, grace_seconds, steps, probes)| History {
                queued_first,
                plan_minutes,
                grace_seconds,
                steps,
                probes,
            },
        )
}

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap()
}

fn terms(history: &History, session_id: Uuid) -> SessionTerms {
    SessionTerms {
        session_id,
        payment_id: session_id,
        device_uid: "washer".into(),
        relay: RelayTarget {
            shelly_device_id: "3c61052d7e90".into(),
            channel: 0,
        },
        plan_id: "p".into(),
        plan_minutes: history.plan_minutes,
        grace_seconds: history.grace_seconds,
    }
}

fn relay_answer(answer: Answer) -> Result<RelayOutcome, RelayError> {
    match answer {
        Answer::On => Ok(RelayOutcome { is_on: true }),
        Answer::Off => Ok(RelayOutcome { is_on: false }),
        Answer::Retryable => Err(RelayError::retryable("no answer within 10 s")),
        Answer::Permanent => Err(RelayError::permanent("unknown device")),
    }
}

/// The command of a step, with a relay that gives the step's answer.
fn command(step: Step, at: DateTime<Utc>) -> (SessionCommand, SessionServices) {
    let relay = Arc::new(FakeRelayGateway::new());
    let actor = Actor::System;
    let command = match step {
        Step::OpenQueued => SessionCommand::OpenQueuedSession { actor, at },
        Step::SwitchOn(answer) => {
            relay.queue_switch(relay_answer(answer));
            SessionCommand::SwitchRelayOn { actor, at }
        }
        Step::Finish(answer) => {
            relay.queue_switch(relay_answer(answer));
            SessionCommand::FinishSession { actor, at }
        }
        Step::Check(answer) => {
            relay.queue_status(relay_answer(answer));
            SessionCommand::CheckRelay { actor, at }
        }
        Step::Cancel(answer) => {
            relay.queue_switch(relay_answer(answer));
            SessionCommand::CancelSession {
                reason: "test".into(),
                actor,
                at,
            }
        }
        Step::ForceEnd(answer) => {
            relay.queue_switch(relay_answer(answer));
            SessionCommand::ForceEndSession {
                reason: "test".into(),
                actor: Actor::Operator { id: "op".into() },
                at,
            }
        }
        Step::SwitchOff(answer) => {
            relay.queue_switch(relay_answer(answer));
            SessionCommand::SwitchRelayOff { actor, at }
        }
    };
    (command, SessionServices::new(relay))
}

/// Runs the history through the aggregate as the command bus would: the live aggregate,
/// every event written, and the last instant.
async fn run(
    history: &History,
    session_id: Uuid,
) -> (DeviceSession, Vec<SessionEvent>, DateTime<Utc>) {
    let mut at = start();
    let mut live = DeviceSession::default();
    let mut events = Vec::new();
    let first = if history.queued_first {
        SessionCommand::QueueSession {
            terms: terms(history, session_id),
            actor: Actor::System,
            at,
        }
    } else {
        SessionCommand::OpenSession {
            terms: terms(history, session_id),
            actor: Actor::System,
            at,
        }
    };
    let relay = SessionServices::new(Arc::new(FakeRelayGateway::new()));
    let mut commands = vec![(first, relay)];
    for (seconds, step) in &history.steps {
        at += Duration::seconds(*seconds);
        commands.push(command(*step, at));
    }
    for (command, services) in commands {
        let sink = EventSink::default();
        // A refusal writes nothing, as in production.
        if live.handle(command, &services, &sink).await.is_ok() {
            events.extend(sink.collect().await);
        }
    }
    (live, events, at)
}

/// A fresh aggregate folded from the events after a trip through JSON (the journal).
fn replay(events: &[SessionEvent]) -> DeviceSession {
    let stored = serde_json::to_string(events).unwrap();
    let loaded: Vec<SessionEvent> = serde_json::from_str(&stored).unwrap();
    let mut session = DeviceSession::default();
    for event in loaded {
        session.apply(event);
    }
    session
}

/// The specification, folded by hand from the events: what the relay should get.
fn specified(events: &[SessionEvent], now: DateTime<Utc>) -> Decision {
    let mut state = "";
    let (mut grace_ends, mut ends, mut observed, mut commanded) = (None, None, None, None);
    for event in events {
        match event {
            SessionEvent::SessionQueued { .. } => state = "queued",
            SessionEvent::SessionOpened { grace_ends_at, .. } => {
                state = "opened";
                grace_ends = Some(*grace_ends_at);
            }
            SessionEvent::SessionActivated { ends_at, .. } => {
                state = "active";
                ends = Some(*ends_at);
            }
            SessionEvent::SessionFinishing { .. } => state = "finishing",
            SessionEvent::SessionCompleted { .. }
            | SessionEvent::SessionCancelled { .. }
            | SessionEvent::SessionFailed { .. }
            | SessionEvent::SessionForceEnded { .. } => state = "ended",
            SessionEvent::RelayOnRequested { .. } => commanded = Some(true),
            SessionEvent::RelayOffRequested { .. } => commanded = Some(false),
            SessionEvent::RelayOnSucceeded { .. } => observed = Some(true),
            SessionEvent::RelayOffSucceeded { .. } => observed = Some(false),
            SessionEvent::RelayStateObserved { is_on, .. } => observed = Some(*is_on),
            _ => {}
        }
    }
    from_fields(state, grace_ends, ends, commanded, observed, now)
}

fn from_fields(
    state: &str,
    grace_ends: Option<DateTime<Utc>>,
    ends: Option<DateTime<Utc>>,
    commanded: Option<bool>,
    observed: Option<bool>,
    now: DateTime<Utc>,
) -> Decision {
    match state {
        "opened" if grace_ends.is_some_and(|end| now >= end) => Decision::Cancel,
        "opened" => Decision::SwitchOn,
        "active" if ends.is_some_and(|end| now >= end) => Decision::Finish,
        "active" if observed == Some(false) => Decision::SwitchOn,
        "active" => Decision::Wait { until: ends },
        "finishing" => Decision::Finish,
        // Ended (any ending; the read model names them) with an OFF never confirmed.
        "ended" | "cancelled" | "failed" | "force_ended"
            if commanded == Some(false) && observed != Some(false) =>
        {
            Decision::SwitchOff
        }
        _ => Decision::NotLive,
    }
}

/// The `sessions` row after the real projection handled the events.
async fn project(
    conn: &mut SqliteConnection,
    session_id: Uuid,
    events: &[SessionEvent],
) -> Option<latchkey_projections::sessions::SessionRow> {
    let id = session_id.to_string();
    let metadata = serde_json::json!({});
    // One history at a time: the table never grows, so reading it back stays cheap.
    sqlx::query("DELETE FROM sessions")
        .execute(&mut *conn)
        .await
        .unwrap();
    for (sequence, event) in events.iter().enumerate() {
        let payload = serde_json::to_value(event).unwrap();
        let event_type = cqrs_es::DomainEvent::event_type(event);
        let record = EventRecord {
            position: sequence as i64 + 1,
            aggregate_type: "DeviceSession",
            aggregate_id: &id,
            sequence: sequence as i64 + 1,
            event_type: &event_type,
            event_version: latchkey_aggregates::EVENT_VERSION,
            payload: &payload,
            metadata: &metadata,
            recorded_at: start(),
        };
        SessionsProjection
            .apply(&mut Conn::Sqlite(conn), &record)
            .await
            .unwrap();
    }
    latchkey_projections::sessions::all(&mut Conn::Sqlite(conn))
        .await
        .unwrap()
        .into_iter()
        .find(|row| row.session_id == id)
}

/// The instants worth judging at: the random probes, and just before, at and after every
/// deadline of the history (where an off-by-one would show).
fn instants(history: &History, last: DateTime<Utc>, session: &DeviceSession) -> Vec<DateTime<Utc>> {
    let mut instants: Vec<DateTime<Utc>> = history
        .probes
        .iter()
        .map(|seconds| last + Duration::seconds(*seconds))
        .collect();
    for deadline in [session.grace_ends_at(), session.ends_at()]
        .into_iter()
        .flatten()
    {
        for millis in [-1, 0, 1] {
            instants.push(deadline + Duration::milliseconds(millis));
        }
    }
    instants
}

#[test]
fn the_decision_equals_a_fresh_replay_and_the_read_model_for_1000_histories() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let conn = runtime.block_on(async {
        let mut conn = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        sqlx::migrate!("./migrations/sqlite")
            .run(&mut conn)
            .await
            .unwrap();
        tokio::sync::Mutex::new(conn)
    });
    // How often each decision came up: the histories must reach every one of them.
    let seen = std::sync::Mutex::new([0_usize; 6]);
    let mut runner = TestRunner::new(Config {
        cases: 1_000,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&history(), |history| {
            runtime.block_on(async {
                let session_id = Uuid::new_v4();
                let (live, events, last) = run(&history, session_id).await;
                let replayed = replay(&events);
                prop_assert_eq!(&replayed, &live);
                let row = project(&mut *conn.lock().await, session_id, &events).await;
                let row = row.ok_or_else(|| TestCaseError::fail("no sessions row"))?;
                for now in instants(&history, last, &replayed) {
                    let decision = decide(&replayed, now);
                    seen.lock().unwrap()[match decision {
                        Decision::SwitchOn => 0,
                        Decision::Cancel => 1,
                        Decision::Finish => 2,
                        Decision::Wait { .. } => 3,
                        Decision::NotLive => 4,
                        Decision::SwitchOff => 5,
                    }] += 1;
                    prop_assert_eq!(decision, decide(&live, now));
                    prop_assert_eq!(decision, specified(&events, now), "at {}", now);
                    let from_row = from_fields(
                        &row.state,
                        row.grace_ends_at,
                        row.ends_at,
                        row.relay_commanded,
                        row.relay_observed,
                        now,
                    );
                    prop_assert_eq!(decision, from_row, "row {:?} at {}", &row, now);
                    // The decision drives the relay toward the replay's desired state.
                    let desired = replayed.desired_relay_on(now);
                    match decision {
                        Decision::SwitchOn => prop_assert!(desired),
                        Decision::Cancel
                        | Decision::Finish
                        | Decision::NotLive
                        | Decision::SwitchOff => prop_assert!(!desired),
                        Decision::Wait { .. } => prop_assert!(desired),
                    }
                }
                Ok(())
            })
        })
        .unwrap();
    let seen = *seen.lock().unwrap();
    assert!(
        seen.iter().all(|count| *count > 0),
        "every decision was exercised: {seen:?}"
    );
}

/// What happens to the device in one step of a Device history.
#[derive(Clone, Copy, Debug)]
enum DeviceStep {
    /// A session (one of four) asks for the relay.
    Reserve(u8),
    /// A session (one of four) ends or leaves the queue.
    Release(u8),
    /// An operator or a sweep switches the relay.
    Switch(bool, Answer),
    Maintenance(bool),
}

fn device_step() -> impl Strategy<Value = DeviceStep> {
    prop_oneof![
        4 => (0_u8..4).prop_map(DeviceStep::Reserve),
        3 => (0_u8..4).prop_map(DeviceStep::Release),
        2 => (any::<bool>(), answer()).prop_map(|(on, answer)| DeviceStep::Switch(on, answer)),
        1 => any::<bool>().prop_map(DeviceStep::Maintenance),
    ]
}

fn device_command(step: DeviceStep, at: DateTime<Utc>) -> (DeviceCommand, DeviceServices) {
    let relay = Arc::new(FakeRelayGateway::new());
    let session = |index: u8| Uuid::from_u128(0x5e55_1000 + u128::from(index));
    let actor = Actor::System;
    let command = match step {
        DeviceStep::Reserve(index) => DeviceCommand::ReserveDevice {
            session_id: session(index),
            payment_id: session(index),
            actor,
            at,
        },
        DeviceStep::Release(index) => DeviceCommand::ReleaseDevice {
            session_id: session(index),
            actor,
            at,
        },
        DeviceStep::Switch(on, answer) => {
            relay.queue_switch(relay_answer(answer));
            DeviceCommand::SwitchRelay {
                on,
                reason: "test".into(),
                actor: Actor::Operator { id: "op".into() },
                at,
            }
        }
        DeviceStep::Maintenance(on) => DeviceCommand::SetDeviceStatus {
            status: if on {
                DeviceStatus::Maintenance
            } else {
                DeviceStatus::Active
            },
            reason: "test".into(),
            actor,
            at,
        },
    };
    (command, DeviceServices::new(relay))
}

/// The sweep picks the devices to read from the `catalogue_devices` read model (no holder)
/// and then decides from a replay of the Device: both must agree on who holds the relay,
/// the queue and the relay state, for 1,000 random Device histories.
#[test]
fn the_catalogue_agrees_with_a_replay_of_the_device_for_1000_histories() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let conn = runtime.block_on(async {
        let mut conn = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        sqlx::migrate!("./migrations/sqlite")
            .run(&mut conn)
            .await
            .unwrap();
        tokio::sync::Mutex::new(conn)
    });
    let mut runner = TestRunner::new(Config {
        cases: 1_000,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = prop::collection::vec((0_i64..=600, device_step()), 0..16);
    runner
        .run(&strategy, |steps| {
            runtime.block_on(async {
                let mut at = start();
                let register = DeviceCommand::RegisterDevice {
                    device_uid: "washer".into(),
                    name: "Washer".into(),
                    location: "Lyon".into(),
                    time_zone: "Europe/Paris".into(),
                    shelly_device_id: "3c61052d7e90".into(),
                    shelly_channel: 0,
                    plans: vec![UsagePlan {
                        plan_id: "p30".into(),
                        name: "30 minutes".into(),
                        minutes: 30,
                        price: Money::new(300, Currency::parse("eur").unwrap()),
                    }],
                    actor: Actor::System,
                    at,
                };
                let mut commands = vec![(
                    register,
                    DeviceServices::new(Arc::new(FakeRelayGateway::new())),
                )];
                for (seconds, step) in &steps {
                    at += Duration::seconds(*seconds);
                    commands.push(device_command(*step, at));
                }
                let mut live = Device::default();
                let mut events = Vec::new();
                for (command, services) in commands {
                    let sink = EventSink::default();
                    if live.handle(command, &services, &sink).await.is_ok() {
                        events.extend(sink.collect().await);
                    }
                }
                let stored = serde_json::to_string(&events).unwrap();
                let mut replayed = Device::default();
                for event in serde_json::from_str::<Vec<DeviceEvent>>(&stored).unwrap() {
                    replayed.apply(event);
                }
                prop_assert_eq!(&replayed, &live);

                let mut conn = conn.lock().await;
                sqlx::query("DELETE FROM catalogue_devices")
                    .execute(&mut *conn)
                    .await
                    .unwrap();
                let metadata = serde_json::json!({});
                for (sequence, event) in events.iter().enumerate() {
                    let payload = serde_json::to_value(event).unwrap();
                    let event_type = cqrs_es::DomainEvent::event_type(event);
                    let record = EventRecord {
                        position: sequence as i64 + 1,
                        aggregate_type: "Device",
                        aggregate_id: "washer",
                        sequence: sequence as i64 + 1,
                        event_type: &event_type,
                        event_version: latchkey_aggregates::EVENT_VERSION,
                        payload: &payload,
                        metadata: &metadata,
                        recorded_at: start(),
                    };
                    CatalogueProjection
                        .apply(&mut Conn::Sqlite(&mut conn), &record)
                        .await
                        .unwrap();
                }
                let row =
                    latchkey_projections::catalogue::device(&mut Conn::Sqlite(&mut conn), "washer")
                        .await
                        .unwrap()
                        .ok_or_else(|| TestCaseError::fail("no catalogue row"))?;
                prop_assert_eq!(
                    row.holder_session_id.clone(),
                    replayed.holder_session().map(|id| id.to_string()),
                    "holder, after {:?}",
                    &steps
                );
                prop_assert_eq!(
                    row.queue_length,
                    replayed.queued_sessions().len() as i64,
                    "queue, after {:?}",
                    &steps
                );
                prop_assert_eq!(
                    row.relay_on,
                    replayed.relay_is_on(),
                    "relay, after {:?}",
                    &steps
                );
                Ok(())
            })
        })
        .unwrap();
}
