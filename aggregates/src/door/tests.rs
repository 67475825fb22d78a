//! Given / when / then tests for the Door aggregate.

use std::sync::Arc;

use chrono::Duration;
use cqrs_es::test::{AggregateTestExecutor, TestFramework};
use uuid::Uuid;

use super::services::testing::{FakeLockGateway, LockCall};
use super::services::{LockError, PasscodeRequest};
use super::*;
use crate::test_support::{assert_replay_reproduces, at, eur, run};
use crate::Actor;

type DoorTest = TestFramework<Door>;

const LOCK_ID: i64 = 7001;
const PAYMENT: Uuid = Uuid::from_u128(0xA1);

fn fake() -> (Arc<FakeLockGateway>, DoorServices) {
    let locks = Arc::new(FakeLockGateway::new());
    (locks.clone(), DoorServices::new(locks))
}

fn given(events: Vec<DoorEvent>) -> AggregateTestExecutor<Door> {
    DoorTest::with(fake().1).given(events)
}

fn alice() -> Actor {
    Actor::operator("alice")
}

fn register() -> DoorCommand {
    DoorCommand::RegisterDoor {
        door_uid: "7001".to_owned(),
        lock_id: LOCK_ID,
        name: "Studio door".to_owned(),
        location: "Lyon".to_owned(),
        time_zone: "Europe/Paris".to_owned(),
        price: eur(500),
        access_minutes: 120,
        actor: alice(),
        at: at(0),
    }
}

fn registered() -> DoorEvent {
    DoorEvent::DoorRegistered {
        door_uid: "7001".to_owned(),
        lock_id: LOCK_ID,
        name: "Studio door".to_owned(),
        location: "Lyon".to_owned(),
        time_zone: "Europe/Paris".to_owned(),
        price: eur(500),
        access_minutes: 120,
        actor: alice(),
        at: at(0),
    }
}

fn maintenance_started() -> DoorEvent {
    DoorEvent::DoorMaintenanceStarted {
        reason: "battery change".to_owned(),
        actor: alice(),
        at: at(5),
    }
}

fn issue(minute: i64) -> DoorCommand {
    DoorCommand::IssueAccessCode {
        payment_id: PAYMENT,
        actor: Actor::System,
        at: at(minute),
        locked_minutes: None,
    }
}

fn requested(minute: i64) -> DoorEvent {
    DoorEvent::AccessCodeRequested {
        payment_id: PAYMENT,
        access_minutes: 120,
        at: at(minute),
    }
}

fn issued(attempt: u32, minute: i64) -> DoorEvent {
    DoorEvent::AccessCodeIssued {
        payment_id: PAYMENT,
        attempt,
        passcode_id: 1001,
        code: "12345671".to_owned(),
        valid_from: at(minute),
        valid_to: at(minute + 120),
        remotely_revocable: true,
        at: at(minute),
        fallback: None,
    }
}

fn issue_failed(attempt: u32, minute: i64) -> DoorEvent {
    DoorEvent::AccessCodeIssueFailed {
        payment_id: PAYMENT,
        attempt,
        reason: "gateway offline".to_owned(),
        retryable: true,
        at: at(minute),
    }
}

fn revoke(minute: i64) -> DoorCommand {
    DoorCommand::RevokeAccessCode {
        payment_id: PAYMENT,
        reason: "payment refunded".to_owned(),
        actor: Actor::System,
        at: at(minute),
    }
}

fn revoked(passcode_id: Option<i64>, minute: i64) -> DoorEvent {
    DoorEvent::AccessCodeRevoked {
        payment_id: PAYMENT,
        passcode_id,
        reason: "payment refunded".to_owned(),
        actor: Actor::System,
        at: at(minute),
        still_valid_until: None,
    }
}

// --- Catalogue ---

#[tokio::test]
async fn registering_a_door_records_its_price_and_access_duration() {
    DoorTest::with(fake().1)
        .given_no_previous_events()
        .when_async(register())
        .await
        .then_expect_events(vec![registered()]);
}

#[tokio::test]
async fn registering_a_door_again_with_other_details_is_refused() {
    let mut command = register();
    if let DoorCommand::RegisterDoor { name, .. } = &mut command {
        *name = "Other".to_owned();
    }
    given(vec![registered()])
        .when_async(command)
        .await
        .then_expect_error(DoorError::AlreadyRegistered {
            door_uid: "7001".to_owned(),
        });
}

#[tokio::test]
async fn a_door_selling_more_than_a_week_of_access_is_refused() {
    let mut command = register();
    if let DoorCommand::RegisterDoor { access_minutes, .. } = &mut command {
        *access_minutes = 20_000;
    }
    DoorTest::with(fake().1)
        .given_no_previous_events()
        .when_async(command)
        .await
        .then_expect_error_message(
            "the door is invalid: the access duration must be between 1 and 10080 minutes, not 20000",
        );
}

#[tokio::test]
async fn a_price_change_records_who_changed_it_and_the_previous_price() {
    given(vec![registered()])
        .when_async(DoorCommand::UpdateDoor {
            name: None,
            location: None,
            time_zone: None,
            price: Some(eur(700)),
            access_minutes: None,
            actor: alice(),
            at: at(3),
        })
        .await
        .then_expect_events(vec![DoorEvent::DoorPriceChanged {
            previous_price: eur(500),
            price: eur(700),
            actor: alice(),
            at: at(3),
        }]);
}

#[tokio::test]
async fn an_update_that_changes_nothing_records_nothing() {
    given(vec![registered()])
        .when_async(DoorCommand::UpdateDoor {
            name: Some("Studio door".to_owned()),
            location: None,
            time_zone: None,
            price: Some(eur(500)),
            access_minutes: Some(120),
            actor: alice(),
            at: at(3),
        })
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn maintenance_starts_and_ends_with_who_and_why() {
    given(vec![registered()])
        .when_async(DoorCommand::SetDoorStatus {
            status: DoorStatus::Maintenance,
            reason: "battery change".to_owned(),
            actor: alice(),
            at: at(5),
        })
        .await
        .then_expect_events(vec![maintenance_started()]);
    given(vec![registered(), maintenance_started()])
        .when_async(DoorCommand::SetDoorStatus {
            status: DoorStatus::Active,
            reason: "battery replaced".to_owned(),
            actor: alice(),
            at: at(9),
        })
        .await
        .then_expect_events(vec![DoorEvent::DoorMaintenanceEnded {
            reason: "battery replaced".to_owned(),
            actor: alice(),
            at: at(9),
        }]);
}

#[tokio::test]
async fn passage_mode_is_recorded_only_when_it_changes() {
    let observed = DoorEvent::PassageModeObserved {
        enabled: true,
        at: at(4),
    };
    let command = DoorCommand::RecordPassageMode {
        enabled: true,
        actor: Actor::System,
        at: at(4),
    };
    given(vec![registered()])
        .when_async(command.clone())
        .await
        .then_expect_events(vec![observed.clone()]);
    given(vec![registered(), observed])
        .when_async(command)
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn commands_for_an_unregistered_door_are_refused() {
    DoorTest::with(fake().1)
        .given_no_previous_events()
        .when_async(issue(10))
        .await
        .then_expect_error(DoorError::NotRegistered);
}

// --- Access codes ---

#[tokio::test]
async fn a_paid_payment_gets_a_code_valid_for_the_access_duration_from_now() {
    let (locks, services) = fake();
    DoorTest::with(services)
        .given(vec![registered()])
        .when_async(issue(10))
        .await
        .then_expect_events(vec![requested(10), issued(1, 10)]);
    assert_eq!(
        locks.calls(),
        vec![LockCall::IssuePasscode(PasscodeRequest {
            lock_id: LOCK_ID,
            payment_id: PAYMENT,
            name: format!("Latchkey {PAYMENT}"),
            valid_from: at(10),
            valid_to: at(10) + Duration::minutes(120),
            code: None,
            period_fallback: false,
        })]
    );
}

#[tokio::test]
async fn the_minutes_locked_at_checkout_win_over_the_doors_current_minutes() {
    let (locks, services) = fake();
    let command = DoorCommand::IssueAccessCode {
        payment_id: PAYMENT,
        actor: Actor::System,
        at: at(10),
        locked_minutes: Some(45),
    };
    let result = DoorTest::with(services)
        .given(vec![registered()])
        .when_async(command)
        .await
        .inspect_result()
        .unwrap();
    assert_eq!(
        result[0],
        DoorEvent::AccessCodeRequested {
            payment_id: PAYMENT,
            access_minutes: 45,
            at: at(10),
        }
    );
    let calls = locks.calls();
    let [LockCall::IssuePasscode(request)] = calls.as_slice() else {
        panic!("one issue call: {calls:?}");
    };
    assert_eq!(request.valid_to - request.valid_from, Duration::minutes(45));
}

#[tokio::test]
async fn a_retry_keeps_the_minutes_of_the_first_request() {
    let (locks, services) = fake();
    let locked_request = DoorEvent::AccessCodeRequested {
        payment_id: PAYMENT,
        access_minutes: 45,
        at: at(10),
    };
    DoorTest::with(services)
        .given(vec![registered(), locked_request, issue_failed(1, 10)])
        .when_async(issue(15))
        .await
        .inspect_result()
        .unwrap();
    let calls = locks.calls();
    let [LockCall::IssuePasscode(request)] = calls.as_slice() else {
        panic!("one issue call: {calls:?}");
    };
    assert_eq!(request.valid_from, at(15));
    assert_eq!(request.valid_to, at(15) + Duration::minutes(45));
}

#[tokio::test]
async fn a_payment_with_a_live_code_never_gets_a_second_one() {
    let (locks, services) = fake();
    DoorTest::with(services)
        .given(vec![registered(), requested(10), issued(1, 10)])
        .when_async(issue(11))
        .await
        .then_expect_events(vec![]);
    assert!(locks.calls().is_empty());
}

#[tokio::test]
async fn a_door_in_maintenance_refuses_to_issue_a_code() {
    let (locks, services) = fake();
    DoorTest::with(services)
        .given(vec![registered(), maintenance_started()])
        .when_async(issue(10))
        .await
        .then_expect_error_message(
            "door 7001 is in maintenance; no access code can be issued until it is active again",
        );
    assert!(locks.calls().is_empty());
}

#[tokio::test]
async fn a_failed_issue_records_the_attempt_and_the_reason() {
    let (locks, services) = fake();
    locks.queue_issue(Err(LockError::retryable("gateway offline")));
    DoorTest::with(services)
        .given(vec![registered()])
        .when_async(issue(10))
        .await
        .then_expect_events(vec![requested(10), issue_failed(1, 10)]);
}

#[tokio::test]
async fn a_retry_after_a_failure_is_attempt_two_and_its_window_starts_at_the_retry() {
    given(vec![registered(), requested(10), issue_failed(1, 10)])
        .when_async(issue(15))
        .await
        .then_expect_events(vec![issued(2, 15)]);
}

#[tokio::test]
async fn issuing_stops_after_the_maximum_number_of_attempts() {
    let mut history = vec![registered(), requested(10)];
    history.extend((1..=MAX_ISSUE_ATTEMPTS).map(|attempt| issue_failed(attempt, 10)));
    given(history)
        .when_async(issue(60))
        .await
        .then_expect_error(DoorError::IssueAttemptsExhausted {
            payment_id: PAYMENT,
            attempts: MAX_ISSUE_ATTEMPTS,
        });
}

#[tokio::test]
async fn revoking_an_issued_code_deletes_it_from_the_lock() {
    let (locks, services) = fake();
    DoorTest::with(services)
        .given(vec![registered(), requested(10), issued(1, 10)])
        .when_async(revoke(20))
        .await
        .then_expect_events(vec![revoked(Some(1001), 20)]);
    assert_eq!(
        locks.calls(),
        vec![LockCall::DeletePasscode {
            lock_id: LOCK_ID,
            passcode_id: 1001,
        }]
    );
}

#[tokio::test]
async fn a_failed_deletion_stays_pending_until_a_retry_succeeds() {
    let (locks, services) = fake();
    locks.queue_delete(Err(LockError::retryable("lock offline")));
    let history = vec![registered(), requested(10), issued(1, 10)];
    let pending = DoorEvent::AccessCodeRevocationPending {
        payment_id: PAYMENT,
        passcode_id: 1001,
        reason: "payment refunded".to_owned(),
        attempt: 1,
        error: "lock offline".to_owned(),
        actor: Actor::System,
        at: at(20),
    };
    DoorTest::with(services)
        .given(history.clone())
        .when_async(revoke(20))
        .await
        .then_expect_events(vec![pending.clone()]);
    let mut with_pending = history;
    with_pending.push(pending);
    given(with_pending)
        .when_async(revoke(25))
        .await
        .then_expect_events(vec![revoked(Some(1001), 25)]);
}

#[tokio::test]
async fn revoking_before_any_code_exists_stops_a_late_issue() {
    // A refund processed before the success's code request: nothing to delete, but the
    // payment must never get a code afterwards.
    let (locks, services) = fake();
    DoorTest::with(services)
        .given(vec![registered()])
        .when_async(revoke(20))
        .await
        .then_expect_events(vec![revoked(None, 20)]);
    assert!(locks.calls().is_empty());
    given(vec![registered(), revoked(None, 20)])
        .when_async(issue(21))
        .await
        .then_expect_error(DoorError::AccessCodeRevoked {
            payment_id: PAYMENT,
        });
}

#[tokio::test]
async fn revoking_a_revoked_code_again_changes_nothing() {
    given(vec![
        registered(),
        requested(10),
        issued(1, 10),
        revoked(Some(1001), 20),
    ])
    .when_async(revoke(30))
    .await
    .then_expect_events(vec![]);
}

#[tokio::test]
async fn housekeeping_expires_codes_whose_window_has_ended() {
    let history = vec![registered(), requested(10), issued(1, 10)];
    given(history.clone())
        .when_async(DoorCommand::ExpireAccessCodes {
            actor: Actor::System,
            at: at(129),
        })
        .await
        .then_expect_events(vec![]);
    given(history)
        .when_async(DoorCommand::ExpireAccessCodes {
            actor: Actor::System,
            at: at(130),
        })
        .await
        .then_expect_events(vec![DoorEvent::AccessCodeExpired {
            payment_id: PAYMENT,
            passcode_id: 1001,
            valid_to: at(130),
            at: at(130),
        }]);
}

#[tokio::test]
async fn replaying_a_door_reproduces_its_state_exactly() {
    let (locks, services) = fake();
    locks.queue_issue(Err(LockError::permanent("passcode storage full")));
    locks.queue_delete(Err(LockError::retryable("lock offline")));
    let commands = vec![
        register(),
        DoorCommand::RecordPassageMode {
            enabled: false,
            actor: Actor::System,
            at: at(1),
        },
        issue(10),
        issue(12),
        revoke(20),
        DoorCommand::UpdateDoor {
            name: Some("Front door".to_owned()),
            location: None,
            time_zone: None,
            price: Some(eur(650)),
            access_minutes: Some(90),
            actor: alice(),
            at: at(21),
        },
        DoorCommand::SetDoorStatus {
            status: DoorStatus::Maintenance,
            reason: "battery".to_owned(),
            actor: alice(),
            at: at(22),
        },
        revoke(23),
    ];
    let (live, events) = run::<Door>(commands, &services).await;
    assert_eq!(live.status(), DoorStatus::Maintenance);
    assert_eq!(
        live.access_code(PAYMENT).map(|code| code.state),
        Some(AccessCodeState::Revoked)
    );
    assert_replay_reproduces(&live, &events);
}

const REFUND_REQUEST: Uuid = Uuid::from_u128(0xB2);

fn compensate(rule: CompensationRule, minute: i64) -> DoorCommand {
    DoorCommand::CompensateAccess {
        payment_id: PAYMENT,
        rule,
        refund_request_id: REFUND_REQUEST,
        paid_at: Some(at(10)),
        deadline_seconds: 900,
        actor: Actor::System,
        at: at(minute),
    }
}

fn reissue(mode: ReissueMode, minute: i64) -> DoorCommand {
    DoorCommand::ReissueAccessCode {
        payment_id: PAYMENT,
        mode,
        locked_minutes: Some(120),
        actor: alice(),
        at: at(minute),
    }
}

#[tokio::test]
async fn a_payment_refused_in_maintenance_is_compensated_with_the_rule_and_its_inputs() {
    given(vec![registered(), maintenance_started()])
        .when_async(compensate(CompensationRule::DeadlinePassed, 25))
        .await
        .then_expect_events(vec![DoorEvent::AccessCompensationDecided {
            payment_id: PAYMENT,
            rule: CompensationRule::DeadlinePassed,
            refund_request_id: REFUND_REQUEST,
            door_status: DoorStatus::Maintenance,
            code_state: None,
            issue_attempts: 0,
            last_error: None,
            paid_at: Some(at(10)),
            deadline_seconds: 900,
            actor: Actor::System,
            at: at(25),
        }]);
}

#[tokio::test]
async fn a_failed_code_is_compensated_with_its_attempts_and_last_error() {
    given(vec![
        registered(),
        requested(10),
        issue_failed(1, 10),
        issue_failed(2, 11),
    ])
    .when_async(compensate(CompensationRule::IssueAttemptsExhausted, 12))
    .await
    .then_expect_events(vec![DoorEvent::AccessCompensationDecided {
        payment_id: PAYMENT,
        rule: CompensationRule::IssueAttemptsExhausted,
        refund_request_id: REFUND_REQUEST,
        door_status: DoorStatus::Active,
        code_state: Some(AccessCodeState::Failed),
        issue_attempts: 2,
        last_error: Some("gateway offline".to_owned()),
        paid_at: Some(at(10)),
        deadline_seconds: 900,
        actor: Actor::System,
        at: at(12),
    }]);
}

#[tokio::test]
async fn a_served_or_already_compensated_payment_is_not_compensated() {
    for history in [
        vec![registered(), requested(10), issued(1, 10)],
        vec![registered(), revoked(None, 20)],
    ] {
        given(history)
            .when_async(compensate(CompensationRule::DeadlinePassed, 25))
            .await
            .then_expect_events(vec![]);
    }
    let (_, events) = run::<Door>(
        vec![register(), compensate(CompensationRule::DeadlinePassed, 25)],
        &fake().1,
    )
    .await;
    given(events)
        .when_async(compensate(CompensationRule::IssueRefused, 26))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn a_compensated_payment_never_gets_a_code_and_a_refund_revokes_nothing() {
    let (_, events) = run::<Door>(
        vec![register(), compensate(CompensationRule::DeadlinePassed, 25)],
        &fake().1,
    )
    .await;
    given(events.clone())
        .when_async(issue(30))
        .await
        .then_expect_error(DoorError::AccessCompensated {
            payment_id: PAYMENT,
        });
    given(events.clone())
        .when_async(reissue(ReissueMode::Retry, 30))
        .await
        .then_expect_error(DoorError::AccessCompensated {
            payment_id: PAYMENT,
        });
    given(events)
        .when_async(revoke(30))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn an_operator_retry_past_the_attempt_limit_starts_again_at_attempt_one() {
    let mut history = vec![registered(), requested(10)];
    history.extend((1..=MAX_ISSUE_ATTEMPTS).map(|attempt| issue_failed(attempt, 10)));
    given(history)
        .when_async(reissue(ReissueMode::Retry, 40))
        .await
        .then_expect_events(vec![
            DoorEvent::AccessCodeReissueRequested {
                payment_id: PAYMENT,
                mode: ReissueMode::Retry,
                previous_passcode_id: None,
                previous_deleted: false,
                previous_still_valid_until: None,
                actor: alice(),
                at: at(40),
            },
            issued(1, 40),
        ]);
}

#[tokio::test]
async fn a_retry_of_a_code_never_requested_uses_the_locked_minutes() {
    given(vec![registered()])
        .when_async(DoorCommand::ReissueAccessCode {
            payment_id: PAYMENT,
            mode: ReissueMode::Retry,
            locked_minutes: Some(45),
            actor: alice(),
            at: at(30),
        })
        .await
        .then_expect_events(vec![
            DoorEvent::AccessCodeRequested {
                payment_id: PAYMENT,
                access_minutes: 45,
                at: at(30),
            },
            DoorEvent::AccessCodeReissueRequested {
                payment_id: PAYMENT,
                mode: ReissueMode::Retry,
                previous_passcode_id: None,
                previous_deleted: false,
                previous_still_valid_until: None,
                actor: alice(),
                at: at(30),
            },
            DoorEvent::AccessCodeIssued {
                payment_id: PAYMENT,
                attempt: 1,
                passcode_id: 1001,
                code: "12345671".to_owned(),
                valid_from: at(30),
                valid_to: at(75),
                remotely_revocable: true,
                at: at(30),
                fallback: None,
            },
        ]);
}

#[tokio::test]
async fn a_retry_of_a_live_code_is_refused_and_a_retry_in_maintenance_too() {
    given(vec![registered(), requested(10), issued(1, 10)])
        .when_async(reissue(ReissueMode::Retry, 20))
        .await
        .then_expect_error(DoorError::AccessCodeLive {
            payment_id: PAYMENT,
        });
    given(vec![registered(), maintenance_started()])
        .when_async(reissue(ReissueMode::Retry, 20))
        .await
        .then_expect_error(DoorError::InMaintenance {
            door_uid: "7001".to_owned(),
        });
}

#[tokio::test]
async fn a_replacement_deletes_the_old_code_first_and_keeps_the_window_end() {
    let (locks, services) = fake();
    DoorTest::with(services)
        .given(vec![registered(), requested(10), issued(1, 10)])
        .when_async(reissue(ReissueMode::Replace, 30))
        .await
        .then_expect_events(vec![
            DoorEvent::AccessCodeReissueRequested {
                payment_id: PAYMENT,
                mode: ReissueMode::Replace,
                previous_passcode_id: Some(1001),
                previous_deleted: true,
                previous_still_valid_until: None,
                actor: alice(),
                at: at(30),
            },
            DoorEvent::AccessCodeIssued {
                payment_id: PAYMENT,
                attempt: 1,
                passcode_id: 1001,
                code: "12345671".to_owned(),
                valid_from: at(30),
                valid_to: at(130),
                remotely_revocable: true,
                at: at(30),
                fallback: None,
            },
        ]);
    assert_eq!(
        locks.calls()[0],
        LockCall::DeletePasscode {
            lock_id: LOCK_ID,
            passcode_id: 1001,
        }
    );
}

#[tokio::test]
async fn a_replacement_whose_old_code_cannot_be_deleted_changes_nothing() {
    let (locks, services) = fake();
    locks.queue_delete(Err(LockError::retryable("lock offline")));
    DoorTest::with(services)
        .given(vec![registered(), requested(10), issued(1, 10)])
        .when_async(reissue(ReissueMode::Replace, 30))
        .await
        .then_expect_error(DoorError::PreviousCodeNotDeleted {
            payment_id: PAYMENT,
            reason: "lock offline".to_owned(),
        });
    assert_eq!(
        locks.calls().len(),
        1,
        "no new code without the old one gone"
    );
}

// --- Codes an unrecorded attempt left on the lock (simulation seed 7040) ---

fn remove_strays(minute: i64) -> DoorCommand {
    DoorCommand::RemoveStrayPasscodes {
        payment_id: PAYMENT,
        actor: Actor::System,
        at: at(minute),
    }
}

fn compensated(minute: i64) -> DoorEvent {
    DoorEvent::AccessCompensationDecided {
        payment_id: PAYMENT,
        rule: CompensationRule::DeadlinePassed,
        refund_request_id: Uuid::from_u128(0xB1),
        door_status: DoorStatus::Active,
        code_state: None,
        issue_attempts: 0,
        last_error: None,
        paid_at: Some(at(0)),
        deadline_seconds: 900,
        actor: Actor::System,
        at: at(minute),
    }
}

/// A crash after TTLock's answer lost the attempt's events, then the guest was
/// compensated: the code the attempt created is found by its name and deleted.
#[tokio::test]
async fn a_code_left_by_an_unrecorded_attempt_is_deleted_after_the_compensation() {
    let (locks, services) = fake();
    locks.queue_delete_named(Ok(1));
    DoorTest::with(services)
        .given(vec![registered(), compensated(15)])
        .when_async(remove_strays(16))
        .await
        .then_expect_events(vec![DoorEvent::StrayPasscodesRemoved {
            payment_id: PAYMENT,
            count: 1,
            actor: Actor::System,
            at: at(16),
        }]);
    assert_eq!(
        locks.calls(),
        vec![LockCall::DeletePasscodesNamed {
            lock_id: LOCK_ID,
            name: format!("Latchkey {PAYMENT}"),
        }]
    );
}

/// Nothing found: nothing journalled. TTLock unreachable: refused so the job retries.
/// A live code is the guest's own and is never searched for as a stray.
#[tokio::test]
async fn the_stray_search_journals_only_what_it_removed_and_is_retried_while_ttlock_is_down() {
    given(vec![registered(), compensated(15)])
        .when_async(remove_strays(16))
        .await
        .then_expect_events(vec![]);

    let (locks, services) = fake();
    locks.queue_delete_named(Err(LockError::retryable("gateway offline")));
    DoorTest::with(services)
        .given(vec![registered(), compensated(15)])
        .when_async(remove_strays(16))
        .await
        .then_expect_error(DoorError::LockUnreachable {
            payment_id: PAYMENT,
            reason: "gateway offline".to_owned(),
        });

    let (locks, services) = fake();
    DoorTest::with(services)
        .given(vec![registered(), requested(1), issued(1, 1)])
        .when_async(remove_strays(16))
        .await
        .then_expect_events(vec![]);
    assert!(locks.calls().is_empty(), "a live code is not a stray");
}

// --- The period-code fallback while the gateway is not working (issue 14) ---

fn fallback_allowed(enabled: bool) -> DoorEvent {
    DoorEvent::DoorOfflineFallbackChanged {
        enabled,
        actor: alice(),
        at: at(1),
    }
}

#[tokio::test]
async fn the_offline_fallback_is_set_by_an_operator_once() {
    given(vec![registered()])
        .when_async(DoorCommand::SetOfflineFallback {
            enabled: true,
            actor: alice(),
            at: at(1),
        })
        .await
        .then_expect_events(vec![fallback_allowed(true)]);
    given(vec![registered(), fallback_allowed(true)])
        .when_async(DoorCommand::SetOfflineFallback {
            enabled: true,
            actor: alice(),
            at: at(2),
        })
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn a_door_without_the_fallback_does_not_allow_the_lock_one() {
    let (locks, services) = fake();
    DoorTest::with(services)
        .given(vec![
            registered(),
            fallback_allowed(true),
            fallback_allowed(false),
        ])
        .when_async(issue(10))
        .await
        .then_expect_events(vec![requested(10), issued(1, 10)]);
    assert!(matches!(
        locks.calls().as_slice(),
        [LockCall::IssuePasscode(PasscodeRequest {
            period_fallback: false,
            ..
        })]
    ));
}

#[tokio::test]
async fn a_fallback_period_code_is_recorded_as_such() {
    let (locks, services) = fake();
    let fallback = CodeFallback {
        kind: PasscodeKind::RandomPeriod,
        reason: "TTLock could not reach the lock through its gateway (errcode -3002)".into(),
    };
    locks.queue_issue(Ok(super::services::IssuedPasscode {
        passcode_id: 90412233,
        code: "40718235".into(),
        valid_from: at(0),
        valid_to: at(180),
        remotely_revocable: false,
        fallback: Some(fallback.clone()),
    }));
    let commands = vec![
        register(),
        DoorCommand::SetOfflineFallback {
            enabled: true,
            actor: alice(),
            at: at(1),
        },
        issue(10),
    ];
    let (door, events) = run::<Door>(commands, &services).await;
    assert_replay_reproduces(&door, &events);
    let code = door.access_code(PAYMENT).unwrap();
    assert_eq!(code.state, AccessCodeState::Issued);
    assert!(!code.remotely_revocable);
    assert_eq!(code.fallback, Some(fallback));
    assert!(matches!(
        locks.calls().as_slice(),
        [LockCall::IssuePasscode(PasscodeRequest {
            period_fallback: true,
            ..
        })]
    ));
    assert!(door.offline_fallback());
}
