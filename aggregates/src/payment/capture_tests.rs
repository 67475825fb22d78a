//! Given / when / then for captures and releases of an authorization (issue 13): the
//! commands only journal the decision, the jobs record Stripe's answer, and a payment whose
//! authorization can no longer be captured cannot start a session.

use cqrs_es::test::TestFramework;

use super::services::{CancelAuthorizationRequest, CaptureRequest};
use super::tests::{
    authorized, checkout_started, confirm, fake, given, stripe, succeeded, PAYMENT_ID, PI,
};
use super::*;
use crate::test_support::{at, eur};
use crate::{Actor, Money};

fn capture(amount: Option<Money>) -> PaymentCommand {
    PaymentCommand::CapturePayment {
        amount_to_capture: amount,
        actor: Actor::System,
        at: at(7),
    }
}

fn capture_ordered(amount_minor: i64) -> PaymentEvent {
    PaymentEvent::PaymentCaptureOrdered {
        payment_intent_id: PI.to_owned(),
        amount_to_capture: eur(amount_minor),
        actor: Actor::System,
        at: at(7),
    }
}

fn capture_answer(outcome: StripeAnswer) -> PaymentCommand {
    PaymentCommand::RecordCaptureSubmission {
        outcome,
        actor: Actor::System,
        at: at(8),
    }
}

fn capture_failed(reason: &str) -> PaymentEvent {
    PaymentEvent::PaymentCaptureFailed {
        payment_intent_id: PI.to_owned(),
        reason: reason.to_owned(),
        at: at(8),
    }
}

fn cancel(reason: &str) -> PaymentCommand {
    PaymentCommand::CancelAuthorization {
        reason: reason.to_owned(),
        actor: Actor::System,
        at: at(9),
    }
}

fn cancellation_ordered(reason: &str) -> PaymentEvent {
    PaymentEvent::PaymentCancellationOrdered {
        payment_intent_id: PI.to_owned(),
        reason: reason.to_owned(),
        actor: Actor::System,
        at: at(9),
    }
}

fn cancellation_answer(outcome: StripeAnswer) -> PaymentCommand {
    PaymentCommand::RecordCancellationSubmission {
        outcome,
        actor: Actor::System,
        at: at(10),
    }
}

fn replay(events: Vec<PaymentEvent>) -> Payment {
    let mut payment = Payment::default();
    for event in events {
        cqrs_es::Aggregate::apply(&mut payment, event);
    }
    payment
}

fn held() -> Vec<PaymentEvent> {
    vec![checkout_started(eur(1000)), authorized(eur(1000))]
}

#[tokio::test]
async fn capturing_only_journals_the_decision_and_never_calls_stripe() {
    let (gateway, services) = fake();
    TestFramework::<Payment>::with(services)
        .given(held())
        .when_async(capture(None))
        .await
        .then_expect_events(vec![capture_ordered(1000)]);
    assert!(gateway.calls().is_empty(), "the capture job calls Stripe");
    let payment = replay([held(), vec![capture_ordered(1000)]].concat());
    assert_eq!(
        payment.capture_submission(),
        Some(CaptureRequest {
            payment_intent_id: PI.to_owned(),
            amount_to_capture: eur(1000),
            idempotency_key: format!("latchkey-capture-{PAYMENT_ID}"),
        }),
        "the job asks Stripe with a key derived from the payment"
    );
}

#[tokio::test]
async fn a_capture_ordered_twice_is_ordered_once() {
    given([held(), vec![capture_ordered(1000)]].concat())
        .when_async(capture(None))
        .await
        .then_expect_events(vec![]);
    given([held(), vec![capture_ordered(1000)]].concat())
        .when_async(capture(Some(eur(600))))
        .await
        .then_expect_error(PaymentError::CaptureAlreadyRequested {
            requested: eur(1000),
        });
}

#[tokio::test]
async fn stripe_accepting_the_capture_is_recorded_once() {
    let ordered = [held(), vec![capture_ordered(1000)]].concat();
    let accepted = PaymentEvent::PaymentCaptureRequested {
        payment_intent_id: PI.to_owned(),
        amount_to_capture: eur(1000),
        at: at(8),
    };
    given(ordered.clone())
        .when_async(capture_answer(StripeAnswer::Accepted))
        .await
        .then_expect_events(vec![accepted.clone()]);
    given([ordered.clone(), vec![accepted.clone()]].concat())
        .when_async(capture_answer(StripeAnswer::Accepted))
        .await
        .then_expect_events(vec![]);
    assert_eq!(
        replay([ordered, vec![accepted]].concat()).capture_submission(),
        None,
        "answered: the job has nothing left to send"
    );
}

#[tokio::test]
async fn a_capture_stripe_refuses_is_recorded_and_the_session_can_no_longer_run() {
    let ordered = [held(), vec![capture_ordered(1000)]].concat();
    let refused = StripeAnswer::Refused {
        reason: "Your card was declined.".to_owned(),
    };
    given(ordered.clone())
        .when_async(capture_answer(refused))
        .await
        .then_expect_events(vec![capture_failed("Your card was declined.")]);
    let payment = replay([ordered.clone(), vec![capture_failed("declined")]].concat());
    assert!(!payment.can_start_session());
    assert_eq!(payment.capture_failure(), Some("declined"));
    assert_eq!(payment.capture_submission(), None);
    assert_eq!(
        payment.status(),
        PaymentStatus::Authorized,
        "Stripe still holds it"
    );
    // The hold is then released, once.
    given([ordered, vec![capture_failed("declined")]].concat())
        .when_async(cancel("the capture failed"))
        .await
        .then_expect_events(vec![cancellation_ordered("the capture failed")]);
}

#[tokio::test]
async fn money_collected_outranks_a_late_refusal_of_the_capture() {
    given(
        [
            held(),
            vec![
                capture_ordered(1000),
                succeeded(eur(1000), PaymentStatus::Succeeded),
            ],
        ]
        .concat(),
    )
    .when_async(capture_answer(StripeAnswer::Refused {
        reason: "replayed".to_owned(),
    }))
    .await
    .then_expect_events(vec![]);
}

#[tokio::test]
async fn an_answer_without_a_decision_is_refused() {
    given(held())
        .when_async(capture_answer(StripeAnswer::Accepted))
        .await
        .then_expect_error(PaymentError::NothingOrdered {
            operation: "capture",
        });
    given(held())
        .when_async(cancellation_answer(StripeAnswer::Accepted))
        .await
        .then_expect_error(PaymentError::NothingOrdered {
            operation: "release of the authorization",
        });
}

#[tokio::test]
async fn releasing_only_journals_the_decision_once() {
    let (gateway, services) = fake();
    TestFramework::<Payment>::with(services)
        .given(held())
        .when_async(cancel("the device never started"))
        .await
        .then_expect_events(vec![cancellation_ordered("the device never started")]);
    assert!(
        gateway.calls().is_empty(),
        "the cancellation job calls Stripe"
    );
    let ordered = [
        held(),
        vec![cancellation_ordered("the device never started")],
    ]
    .concat();
    given(ordered.clone())
        .when_async(cancel("the device is in maintenance"))
        .await
        .then_expect_events(vec![]);
    let payment = replay(ordered.clone());
    assert!(
        !payment.can_start_session(),
        "a released hold starts nothing"
    );
    assert_eq!(
        payment.cancellation_submission(),
        Some(CancelAuthorizationRequest {
            payment_intent_id: PI.to_owned(),
            reason: "the device never started".to_owned(),
            idempotency_key: format!("latchkey-cancel-{PAYMENT_ID}"),
        })
    );
    given(ordered.clone())
        .when_async(capture(None))
        .await
        .then_expect_error(PaymentError::ReleaseAlreadyOrdered);
}

#[tokio::test]
async fn stripe_accepting_the_release_is_recorded_once_and_its_webhook_closes_the_payment() {
    let ordered = [held(), vec![cancellation_ordered("never started")]].concat();
    let accepted = PaymentEvent::PaymentCancellationRequested {
        payment_intent_id: PI.to_owned(),
        reason: "never started".to_owned(),
        at: at(10),
    };
    given(ordered.clone())
        .when_async(cancellation_answer(StripeAnswer::Accepted))
        .await
        .then_expect_events(vec![accepted.clone()]);
    let answered = [ordered.clone(), vec![accepted]].concat();
    given(answered.clone())
        .when_async(cancellation_answer(StripeAnswer::Accepted))
        .await
        .then_expect_events(vec![]);
    assert_eq!(replay(answered.clone()).cancellation_submission(), None);
    given(answered)
        .when_async(PaymentCommand::RecordCancellation {
            payment_intent_id: PI.to_owned(),
            cancellation_reason: Some("requested_by_customer".to_owned()),
            stripe_event: stripe("evt_cancel", 10),
            actor: Actor::Stripe,
            at: at(11),
        })
        .await
        .then_expect_events(vec![PaymentEvent::PaymentCancelled {
            payment_intent_id: PI.to_owned(),
            cancellation_reason: Some("requested_by_customer".to_owned()),
            status: PaymentStatus::Cancelled,
            stripe_event: stripe("evt_cancel", 10),
            at: at(11),
        }]);
}

#[tokio::test]
async fn a_release_stripe_refuses_is_recorded_for_an_operator() {
    let ordered = [held(), vec![cancellation_ordered("never started")]].concat();
    let refused = PaymentEvent::PaymentCancellationFailed {
        payment_intent_id: PI.to_owned(),
        reason: "already captured".to_owned(),
        at: at(10),
    };
    given(ordered.clone())
        .when_async(cancellation_answer(StripeAnswer::Refused {
            reason: "already captured".to_owned(),
        }))
        .await
        .then_expect_events(vec![refused.clone()]);
    let payment = replay([ordered, vec![refused]].concat());
    assert_eq!(payment.cancellation_failure(), Some("already captured"));
    assert_eq!(payment.cancellation_submission(), None);
}

#[tokio::test]
async fn a_capture_in_progress_is_not_released() {
    given([held(), vec![capture_ordered(1000)]].concat())
        .when_async(cancel("force-ended"))
        .await
        .then_expect_error(PaymentError::CaptureAlreadyRequested {
            requested: eur(1000),
        });
}

#[tokio::test]
async fn an_authorization_stripe_cancelled_can_neither_start_nor_be_released_again() {
    let cancelled = PaymentEvent::PaymentCancelled {
        payment_intent_id: PI.to_owned(),
        cancellation_reason: Some("automatic".to_owned()),
        status: PaymentStatus::Cancelled,
        stripe_event: stripe("evt_cancel", 10),
        at: at(11),
    };
    let history = [held(), vec![cancelled]].concat();
    assert!(!replay(history.clone()).can_start_session());
    given(history.clone())
        .when_async(cancel("never started"))
        .await
        .then_expect_error(PaymentError::NotCancellable {
            status: PaymentStatus::Cancelled,
        });
    given(history.clone())
        .when_async(capture(None))
        .await
        .then_expect_error(PaymentError::NotCapturable {
            status: PaymentStatus::Cancelled,
        });
    // A release ordered before Stripe's own cancellation has nothing left to send.
    let ordered_then_cancelled = [
        held(),
        vec![cancellation_ordered("never started")],
        history[2..].to_vec(),
    ]
    .concat();
    assert_eq!(
        replay(ordered_then_cancelled).cancellation_submission(),
        None
    );
}

#[tokio::test]
async fn a_legacy_capture_request_counts_as_ordered_and_answered() {
    // Journals written before the capture job: the command called Stripe itself.
    let legacy = PaymentEvent::PaymentCaptureRequested {
        payment_intent_id: PI.to_owned(),
        amount_to_capture: eur(600),
        at: at(7),
    };
    let history = [held(), vec![legacy]].concat();
    assert_eq!(replay(history.clone()).capture_submission(), None);
    given(history.clone())
        .when_async(capture(Some(eur(600))))
        .await
        .then_expect_events(vec![]);
    given(history)
        .when_async(confirm(eur(600), "evt_success", 10))
        .await
        .then_expect_events(vec![succeeded(eur(600), PaymentStatus::Succeeded)]);
}

#[test]
fn a_paid_or_held_payment_can_start_a_session_and_nothing_else_can() {
    assert!(replay(held()).can_start_session());
    assert!(replay(vec![
        checkout_started(eur(1000)),
        succeeded(eur(1000), PaymentStatus::Succeeded)
    ])
    .can_start_session());
    assert!(!replay(vec![checkout_started(eur(1000))]).can_start_session());
}
