//! Given / when / then tests for the Device aggregate.

use std::sync::Arc;

use cqrs_es::test::{AggregateTestExecutor, TestFramework};
use cqrs_es::Aggregate;
use uuid::Uuid;

use super::services::testing::{FakeRelayGateway, RelayCall};
use super::services::{RelayCommand, RelayError};
use super::*;
use crate::test_support::{assert_replay_reproduces, at, eur, run};
use crate::Actor;

type DeviceTest = TestFramework<Device>;

const FIRST: Uuid = Uuid::from_u128(0x51);
const SECOND: Uuid = Uuid::from_u128(0x52);
const THIRD: Uuid = Uuid::from_u128(0x53);

fn payment_of(session_id: Uuid) -> Uuid {
    Uuid::from_u128(session_id.as_u128() + 0x1000)
}

fn fake() -> (Arc<FakeRelayGateway>, DeviceServices) {
    let relay = Arc::new(FakeRelayGateway::new());
    (relay.clone(), DeviceServices::new(relay))
}

fn given(events: Vec<DeviceEvent>) -> AggregateTestExecutor<Device> {
    DeviceTest::with(fake().1).given(events)
}

fn alice() -> Actor {
    Actor::operator("alice")
}

fn plans() -> Vec<UsagePlan> {
    vec![
        UsagePlan {
            plan_id: "wash-30".to_owned(),
            name: "30 minutes".to_owned(),
            minutes: 30,
            price: eur(300),
        },
        UsagePlan {
            plan_id: "wash-60".to_owned(),
            name: "1 hour".to_owned(),
            minutes: 60,
            price: eur(500),
        },
    ]
}

fn register(plans: Vec<UsagePlan>) -> DeviceCommand {
    DeviceCommand::RegisterDevice {
        device_uid: "washer-1".to_owned(),
        name: "Washer".to_owned(),
        location: "Lyon".to_owned(),
        time_zone: "Europe/Paris".to_owned(),
        shelly_device_id: "3c61052d7e90".to_owned(),
        shelly_channel: 0,
        plans,
        actor: alice(),
        at: at(0),
    }
}

fn registered() -> DeviceEvent {
    DeviceEvent::DeviceRegistered {
        device_uid: "washer-1".to_owned(),
        name: "Washer".to_owned(),
        location: "Lyon".to_owned(),
        time_zone: "Europe/Paris".to_owned(),
        shelly_device_id: "3c61052d7e90".to_owned(),
        shelly_channel: 0,
        plans: plans(),
        actor: alice(),
        at: at(0),
    }
}

fn reserve(session_id: Uuid, minute: i64) -> DeviceCommand {
    DeviceCommand::ReserveDevice {
        session_id,
        payment_id: payment_of(session_id),
        actor: Actor::System,
        at: at(minute),
    }
}

fn release(session_id: Uuid, minute: i64) -> DeviceCommand {
    DeviceCommand::ReleaseDevice {
        session_id,
        actor: Actor::System,
        at: at(minute),
    }
}

fn reserved(session_id: Uuid, from_queue: bool, minute: i64) -> DeviceEvent {
    DeviceEvent::DeviceReserved {
        session_id,
        payment_id: payment_of(session_id),
        from_queue,
        at: at(minute),
    }
}

fn queued(session_id: Uuid, position: u32, minute: i64) -> DeviceEvent {
    DeviceEvent::DeviceReservationQueued {
        session_id,
        payment_id: payment_of(session_id),
        position,
        at: at(minute),
    }
}

fn maintenance(status: DeviceStatus, minute: i64) -> DeviceCommand {
    DeviceCommand::SetDeviceStatus {
        status,
        reason: "descaling".to_owned(),
        actor: alice(),
        at: at(minute),
    }
}

fn maintenance_started(minute: i64) -> DeviceEvent {
    DeviceEvent::DeviceMaintenanceStarted {
        reason: "descaling".to_owned(),
        actor: alice(),
        at: at(minute),
    }
}

// --- Catalogue ---

#[tokio::test]
async fn registering_a_device_records_its_relay_and_plans() {
    DeviceTest::with(fake().1)
        .given_no_previous_events()
        .when_async(register(plans()))
        .await
        .then_expect_events(vec![registered()]);
}

#[tokio::test]
async fn a_device_without_plans_or_with_a_plan_id_used_twice_is_refused() {
    DeviceTest::with(fake().1)
        .given_no_previous_events()
        .when_async(register(vec![]))
        .await
        .then_expect_error_message(
            "the device is invalid: a device needs between 1 and 20 plans, not 0",
        );
    let mut twice = plans();
    twice[1].plan_id = "wash-30".to_owned();
    DeviceTest::with(fake().1)
        .given_no_previous_events()
        .when_async(register(twice))
        .await
        .then_expect_error_message("the device is invalid: plan id wash-30 is used twice");
}

#[tokio::test]
async fn a_plan_change_records_who_changed_it_and_the_new_list() {
    let mut new_plans = plans();
    new_plans[0].price = eur(350);
    given(vec![registered()])
        .when_async(DeviceCommand::ChangePlans {
            plans: new_plans.clone(),
            actor: alice(),
            at: at(2),
        })
        .await
        .then_expect_events(vec![DeviceEvent::DevicePlansChanged {
            plans: new_plans,
            actor: alice(),
            at: at(2),
        }]);
}

// --- Who holds the relay ---

#[tokio::test]
async fn reserving_a_free_device_gives_it_to_the_session() {
    given(vec![registered()])
        .when_async(reserve(FIRST, 1))
        .await
        .then_expect_events(vec![reserved(FIRST, false, 1)]);
}

#[tokio::test]
async fn a_second_paid_session_is_queued_behind_the_holder() {
    given(vec![registered(), reserved(FIRST, false, 1)])
        .when_async(reserve(SECOND, 2))
        .await
        .then_expect_events(vec![queued(SECOND, 1, 2)]);
}

#[tokio::test]
async fn reserving_again_for_the_same_session_changes_nothing() {
    given(vec![
        registered(),
        reserved(FIRST, false, 1),
        queued(SECOND, 1, 2),
    ])
    .when_async(reserve(SECOND, 3))
    .await
    .then_expect_events(vec![]);
}

#[tokio::test]
async fn a_device_in_maintenance_refuses_new_sessions() {
    given(vec![registered(), maintenance_started(1)])
        .when_async(reserve(FIRST, 2))
        .await
        .then_expect_error(DeviceError::InMaintenance {
            device_uid: "washer-1".to_owned(),
        });
}

#[tokio::test]
async fn releasing_the_holder_starts_the_next_queued_session_in_the_same_command() {
    given(vec![
        registered(),
        reserved(FIRST, false, 1),
        queued(SECOND, 1, 2),
        queued(THIRD, 2, 3),
    ])
    .when_async(release(FIRST, 40))
    .await
    .then_expect_events(vec![
        DeviceEvent::DeviceReleased {
            session_id: FIRST,
            at: at(40),
        },
        reserved(SECOND, true, 40),
    ]);
}

#[tokio::test]
async fn releasing_the_holder_with_nobody_waiting_leaves_the_device_free() {
    given(vec![registered(), reserved(FIRST, false, 1)])
        .when_async(release(FIRST, 40))
        .await
        .then_expect_events(vec![DeviceEvent::DeviceReleased {
            session_id: FIRST,
            at: at(40),
        }]);
    given(vec![
        registered(),
        reserved(FIRST, false, 1),
        DeviceEvent::DeviceReleased {
            session_id: FIRST,
            at: at(40),
        },
    ])
    .when_async(release(FIRST, 41))
    .await
    .then_expect_events(vec![]);
}

#[tokio::test]
async fn a_queued_session_can_leave_the_queue_before_its_turn() {
    given(vec![
        registered(),
        reserved(FIRST, false, 1),
        queued(SECOND, 1, 2),
    ])
    .when_async(release(SECOND, 5))
    .await
    .then_expect_events(vec![DeviceEvent::QueuedSessionWithdrawn {
        session_id: SECOND,
        at: at(5),
    }]);
}

#[tokio::test]
async fn no_queued_session_starts_during_maintenance_and_the_next_starts_when_it_ends() {
    let history = vec![
        registered(),
        reserved(FIRST, false, 1),
        queued(SECOND, 1, 2),
        maintenance_started(3),
    ];
    given(history.clone())
        .when_async(release(FIRST, 40))
        .await
        .then_expect_events(vec![DeviceEvent::DeviceReleased {
            session_id: FIRST,
            at: at(40),
        }]);
    let mut released = history;
    released.push(DeviceEvent::DeviceReleased {
        session_id: FIRST,
        at: at(40),
    });
    given(released)
        .when_async(maintenance(DeviceStatus::Active, 50))
        .await
        .then_expect_events(vec![
            DeviceEvent::DeviceMaintenanceEnded {
                reason: "descaling".to_owned(),
                actor: alice(),
                at: at(50),
            },
            reserved(SECOND, true, 50),
        ]);
}

#[tokio::test]
async fn a_free_device_with_sessions_waiting_starts_the_first_before_queueing_a_newcomer() {
    // History written by hand: a release during maintenance, then maintenance lifted by an
    // event that promoted nobody. The device must not leave its queue waiting forever.
    given(vec![
        registered(),
        reserved(FIRST, false, 1),
        queued(SECOND, 1, 2),
        maintenance_started(3),
        DeviceEvent::DeviceReleased {
            session_id: FIRST,
            at: at(40),
        },
        DeviceEvent::DeviceMaintenanceEnded {
            reason: "descaling".to_owned(),
            actor: alice(),
            at: at(50),
        },
    ])
    .when_async(reserve(THIRD, 51))
    .await
    .then_expect_events(vec![reserved(SECOND, true, 51), queued(THIRD, 1, 51)]);
}

#[tokio::test]
async fn the_queue_behind_a_device_is_bounded() {
    let mut history = vec![registered(), reserved(FIRST, false, 1)];
    for position in 1..=MAX_QUEUE_LENGTH {
        let session_id = Uuid::from_u128(0x100 + position as u128);
        history.push(DeviceEvent::DeviceReservationQueued {
            session_id,
            payment_id: payment_of(session_id),
            position: position as u32,
            at: at(2),
        });
    }
    given(history)
        .when_async(reserve(SECOND, 3))
        .await
        .then_expect_error(DeviceError::QueueFull {
            device_uid: "washer-1".to_owned(),
            limit: MAX_QUEUE_LENGTH,
        });
}

// --- The relay by hand ---

#[tokio::test]
async fn an_operator_switches_the_relay_and_the_event_says_who_and_why() {
    let (relay, services) = fake();
    DeviceTest::with(services)
        .given(vec![registered()])
        .when_async(DeviceCommand::SwitchRelay {
            on: false,
            reason: "water leak".to_owned(),
            actor: alice(),
            at: at(7),
        })
        .await
        .then_expect_events(vec![DeviceEvent::RelaySwitched {
            on: false,
            is_on: false,
            reason: "water leak".to_owned(),
            actor: alice(),
            at: at(7),
        }]);
    assert_eq!(
        relay.calls(),
        vec![RelayCall::Switch(RelayCommand {
            shelly_device_id: "3c61052d7e90".to_owned(),
            channel: 0,
            on: false,
            auto_off_seconds: None,
        })]
    );
}

#[tokio::test]
async fn a_manual_on_carries_its_device_timer_and_stands_only_until_it_runs_out() {
    let (relay, services) = fake();
    let events = DeviceTest::with(services)
        .given(vec![registered()])
        .when_async(DeviceCommand::SwitchRelay {
            on: true,
            reason: "cleaning".to_owned(),
            actor: alice(),
            at: at(7),
        })
        .await
        .inspect_result()
        .unwrap();
    assert_eq!(
        relay.calls(),
        vec![RelayCall::Switch(RelayCommand {
            shelly_device_id: "3c61052d7e90".to_owned(),
            channel: 0,
            on: true,
            auto_off_seconds: Some(MANUAL_ON_AUTO_OFF_SECONDS),
        })]
    );
    let mut device = Device::default();
    for event in std::iter::once(registered()).chain(events) {
        device.apply(event);
    }
    let timer = chrono::Duration::seconds(MANUAL_ON_AUTO_OFF_SECONDS as i64);
    assert!(device.manual_on_stands_at(at(7)));
    assert!(device.manual_on_stands_at(at(7) + timer - chrono::Duration::seconds(1)));
    assert!(
        !device.manual_on_stands_at(at(7) + timer),
        "after its timer the relay is the sweep's again"
    );
    device.apply(DeviceEvent::RelaySwitched {
        on: false,
        is_on: false,
        reason: "done".to_owned(),
        actor: alice(),
        at: at(8),
    });
    assert!(!device.manual_on_stands_at(at(8)));
}

#[tokio::test]
async fn a_relay_that_cannot_be_switched_by_hand_is_reported() {
    let (relay, services) = fake();
    relay.queue_switch(Err(RelayError::retryable("device offline")));
    DeviceTest::with(services)
        .given(vec![registered()])
        .when_async(DeviceCommand::SwitchRelay {
            on: true,
            reason: "testing".to_owned(),
            actor: alice(),
            at: at(7),
        })
        .await
        .then_expect_error_message(
            "the relay of device washer-1 could not be switched: device offline",
        );
}

#[tokio::test]
async fn replaying_a_device_reproduces_its_state_exactly() {
    let (_, services) = fake();
    let commands = vec![
        register(plans()),
        reserve(FIRST, 1),
        reserve(SECOND, 2),
        reserve(THIRD, 3),
        release(THIRD, 4),
        maintenance(DeviceStatus::Maintenance, 5),
        release(FIRST, 40),
        maintenance(DeviceStatus::Active, 50),
        DeviceCommand::UpdateDevice {
            name: Some("Big washer".to_owned()),
            location: None,
            time_zone: None,
            shelly_device_id: None,
            shelly_channel: Some(1),
            actor: alice(),
            at: at(51),
        },
        DeviceCommand::SwitchRelay {
            on: true,
            reason: "test run".to_owned(),
            actor: alice(),
            at: at(52),
        },
    ];
    let (live, events) = run::<Device>(commands, &services).await;
    assert_eq!(live.holder_session(), Some(SECOND));
    assert!(live.queued_sessions().is_empty());
    assert_replay_reproduces(&live, &events);
}
