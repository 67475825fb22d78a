//! Given / when / then tests for the Payment aggregate, and the order-independence property.

use std::sync::Arc;

use cqrs_es::event_sink::EventSink;
use cqrs_es::test::TestFramework;
use cqrs_es::{Aggregate, DomainEvent};
use proptest::prelude::*;
use uuid::Uuid;

use super::services::testing::FakePaymentGateway;
use super::services::RefundRequest;
use super::RefundSubmissionOutcome;
use super::*;
use crate::test_support::{assert_replay_reproduces, at, eur, run};
use crate::{Actor, Currency, Money};

type PaymentTest = TestFramework<Payment>;

pub(super) const PAYMENT_ID: Uuid = Uuid::from_u128(0x1111);
pub(super) const PI: &str = "pi_1";
const CHARGE: &str = "ch_1";

pub(super) fn fake() -> (Arc<FakePaymentGateway>, PaymentServices) {
    let gateway = Arc::new(FakePaymentGateway::new());
    (gateway.clone(), PaymentServices::new(gateway))
}

pub(super) fn given(events: Vec<PaymentEvent>) -> cqrs_es::test::AggregateTestExecutor<Payment> {
    PaymentTest::with(fake().1).given(events)
}

fn door() -> PaymentTarget {
    PaymentTarget::Door {
        door_uid: "7001".to_owned(),
    }
}

pub(super) fn stripe(id: &str, created_minute: i64) -> StripeEventRef {
    StripeEventRef {
        id: id.to_owned(),
        created: at(created_minute),
    }
}

fn start_checkout(price: Money) -> PaymentCommand {
    PaymentCommand::StartCheckout {
        payment_id: PAYMENT_ID,
        target: door(),
        price,
        guest_email: "guest@example.com".to_owned(),
        actor: Actor::Guest,
        at: at(0),
        offer: None,
    }
}

pub(super) fn checkout_started(price: Money) -> PaymentEvent {
    PaymentEvent::CheckoutStarted {
        payment_id: PAYMENT_ID,
        target: door(),
        price,
        guest_email: "guest@example.com".to_owned(),
        at: at(0),
        offer: None,
    }
}

pub(super) fn confirm(amount: Money, event_id: &str, created_minute: i64) -> PaymentCommand {
    PaymentCommand::ConfirmPayment {
        payment_intent_id: PI.to_owned(),
        charge_id: Some(CHARGE.to_owned()),
        amount_received: amount,
        stripe_event: stripe(event_id, created_minute),
        actor: Actor::Stripe,
        at: at(30),
    }
}

pub(super) fn succeeded(amount: Money, status: PaymentStatus) -> PaymentEvent {
    PaymentEvent::PaymentSucceeded {
        payment_intent_id: PI.to_owned(),
        charge_id: Some(CHARGE.to_owned()),
        amount_received: amount,
        status,
        stripe_event: stripe("evt_success", 10),
        at: at(30),
    }
}

fn refund_report(total: i64, event_id: &str, created_minute: i64) -> PaymentCommand {
    PaymentCommand::RecordRefund {
        payment_intent_id: Some(PI.to_owned()),
        charge_id: CHARGE.to_owned(),
        amount_refunded: eur(total),
        refund_request_id: None,
        stripe_event: stripe(event_id, created_minute),
        actor: Actor::Stripe,
        at: at(40),
    }
}

fn refund_recorded(
    total: i64,
    increase: i64,
    status: PaymentStatus,
    event_id: &str,
    created_minute: i64,
) -> PaymentEvent {
    PaymentEvent::RefundRecorded {
        charge_id: CHARGE.to_owned(),
        amount_refunded: eur(total),
        refunded_increase: eur(increase),
        status,
        stripe_event: stripe(event_id, created_minute),
        at: at(40),
        charge_amount_refunded: Some(eur(total)),
        refund_id: None,
        refund_request_id: None,
    }
}

fn failure(event_id: &str, created_minute: i64) -> PaymentCommand {
    PaymentCommand::RecordFailure {
        payment_intent_id: PI.to_owned(),
        reason: "card_declined: insufficient_funds".to_owned(),
        stripe_event: stripe(event_id, created_minute),
        actor: Actor::Stripe,
        at: at(20),
    }
}

fn failed(attempt: u32, event_id: &str, created_minute: i64) -> PaymentEvent {
    PaymentEvent::PaymentFailed {
        payment_intent_id: PI.to_owned(),
        reason: "card_declined: insufficient_funds".to_owned(),
        attempt,
        status: PaymentStatus::Failed,
        stripe_event: stripe(event_id, created_minute),
        at: at(20),
    }
}

pub(super) fn authorized(amount: Money) -> PaymentEvent {
    PaymentEvent::PaymentAuthorized {
        payment_intent_id: PI.to_owned(),
        amount_capturable: amount,
        status: PaymentStatus::Authorized,
        stripe_event: stripe("evt_auth", 5),
        at: at(6),
    }
}

fn ignored(report: StripeReport, reason: &str, event_id: &str, created: i64) -> PaymentEvent {
    PaymentEvent::StripeReportIgnored {
        report,
        reason: reason.to_owned(),
        stripe_event: stripe(event_id, created),
        at: at(20),
    }
}

fn request_refund(id: u128, amount: Option<Money>) -> PaymentCommand {
    PaymentCommand::RequestRefund {
        refund_request_id: Uuid::from_u128(id),
        amount,
        reason: "guest could not open the door".to_owned(),
        actor: Actor::operator("alice"),
        at: at(50),
    }
}

fn refund_ordered(id: u128, amount: i64) -> PaymentEvent {
    PaymentEvent::RefundOrdered {
        refund_request_id: Uuid::from_u128(id),
        amount: eur(amount),
        reason: "guest could not open the door".to_owned(),
        actor: Actor::operator("alice"),
        at: at(50),
        asked_for_the_rest: false,
    }
}

fn rest_ordered(id: u128, amount: i64) -> PaymentEvent {
    match refund_ordered(id, amount) {
        PaymentEvent::RefundOrdered {
            refund_request_id,
            amount,
            reason,
            actor,
            at,
            ..
        } => PaymentEvent::RefundOrdered {
            refund_request_id,
            amount,
            reason,
            actor,
            at,
            asked_for_the_rest: true,
        },
        other => other,
    }
}

// --- Checkout and the price lock ---

#[tokio::test]
async fn starting_a_checkout_locks_the_price() {
    PaymentTest::with(fake().1)
        .given_no_previous_events()
        .when_async(start_checkout(eur(1000)))
        .await
        .then_expect_events(vec![checkout_started(eur(1000))]);
}

#[tokio::test]
async fn starting_the_same_checkout_twice_changes_nothing() {
    given(vec![checkout_started(eur(1000))])
        .when_async(start_checkout(eur(1000)))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn a_later_price_never_replaces_the_locked_price() {
    given(vec![checkout_started(eur(1000))])
        .when_async(start_checkout(eur(1500)))
        .await
        .then_expect_error(PaymentError::AlreadyStarted {
            price: eur(1000),
            target: "door 7001".to_owned(),
        });
}

#[tokio::test]
async fn a_checkout_without_a_positive_price_or_an_email_is_refused() {
    PaymentTest::with(fake().1)
        .given_no_previous_events()
        .when_async(start_checkout(eur(0)))
        .await
        .then_expect_error_message("the checkout is invalid: the price must be positive");
    let mut command = start_checkout(eur(1000));
    if let PaymentCommand::StartCheckout { guest_email, .. } = &mut command {
        *guest_email = "nobody".to_owned();
    }
    PaymentTest::with(fake().1)
        .given_no_previous_events()
        .when_async(command)
        .await
        .then_expect_error_message(
            "the checkout is invalid: the guest email must be an email address",
        );
}

#[tokio::test]
async fn stripe_facts_for_a_payment_never_started_are_refused() {
    PaymentTest::with(fake().1)
        .given_no_previous_events()
        .when_async(confirm(eur(1000), "evt_success", 10))
        .await
        .then_expect_error(PaymentError::NotStarted);
}

#[tokio::test]
async fn recording_the_checkout_session_links_the_stripe_ids() {
    given(vec![checkout_started(eur(1000))])
        .when_async(PaymentCommand::RecordCheckoutSession {
            checkout_session_id: "cs_1".to_owned(),
            payment_intent_id: None,
            expires_at: Some(at(60)),
            actor: Actor::Guest,
            at: at(1),
        })
        .await
        .then_expect_events(vec![PaymentEvent::CheckoutSessionCreated {
            checkout_session_id: "cs_1".to_owned(),
            payment_intent_id: None,
            expires_at: Some(at(60)),
            at: at(1),
        }]);
}

// --- Confirmation ---

#[tokio::test]
async fn confirming_a_pending_payment_records_the_success() {
    given(vec![checkout_started(eur(1000))])
        .when_async(confirm(eur(1000), "evt_success", 10))
        .await
        .then_expect_events(vec![succeeded(eur(1000), PaymentStatus::Succeeded)]);
}

#[tokio::test]
async fn confirming_again_for_the_same_payment_intent_only_records_a_duplicate() {
    given(vec![
        checkout_started(eur(1000)),
        succeeded(eur(1000), PaymentStatus::Succeeded),
    ])
    .when_async(confirm(eur(1000), "evt_success_again", 12))
    .await
    .then_expect_events(vec![PaymentEvent::DuplicateConfirmationIgnored {
        payment_intent_id: PI.to_owned(),
        stripe_event: stripe("evt_success_again", 12),
        at: at(30),
    }]);
}

#[tokio::test]
async fn confirming_with_a_different_payment_intent_is_refused() {
    let mut command = confirm(eur(1000), "evt_other", 12);
    if let PaymentCommand::ConfirmPayment {
        payment_intent_id, ..
    } = &mut command
    {
        *payment_intent_id = "pi_other".to_owned();
    }
    given(vec![
        checkout_started(eur(1000)),
        succeeded(eur(1000), PaymentStatus::Succeeded),
    ])
    .when_async(command)
    .await
    .then_expect_error(PaymentError::PaymentIntentMismatch {
        expected: PI.to_owned(),
        reported: "pi_other".to_owned(),
    });
}

#[tokio::test]
async fn confirming_with_a_different_amount_is_refused() {
    given(vec![
        checkout_started(eur(1000)),
        succeeded(eur(1000), PaymentStatus::Succeeded),
    ])
    .when_async(confirm(eur(900), "evt_other", 12))
    .await
    .then_expect_error(PaymentError::ConfirmationAmountMismatch {
        recorded: eur(1000),
        reported: eur(900),
    });
}

#[tokio::test]
async fn confirming_with_a_different_currency_is_refused() {
    let usd = Money::new(1000, Currency::parse("usd").unwrap());
    given(vec![
        checkout_started(eur(1000)),
        succeeded(eur(1000), PaymentStatus::Succeeded),
    ])
    .when_async(confirm(usd, "evt_other", 12))
    .await
    .then_expect_error_message("Stripe reported an amount in usd but the payment is in eur");
}

// --- Failures ---

#[tokio::test]
async fn a_failed_attempt_records_the_reason() {
    given(vec![checkout_started(eur(1000))])
        .when_async(failure("evt_fail", 8))
        .await
        .then_expect_events(vec![failed(1, "evt_fail", 8)]);
}

#[tokio::test]
async fn a_success_after_a_failed_attempt_still_succeeds() {
    // The guest's first card was declined and the second one worked.
    given(vec![checkout_started(eur(1000)), failed(1, "evt_fail", 8)])
        .when_async(confirm(eur(1000), "evt_success", 10))
        .await
        .then_expect_events(vec![succeeded(eur(1000), PaymentStatus::Succeeded)]);
}

#[tokio::test]
async fn a_failure_created_before_the_success_never_downgrades_it() {
    given(vec![
        checkout_started(eur(1000)),
        succeeded(eur(1000), PaymentStatus::Succeeded),
    ])
    .when_async(failure("evt_fail", 8))
    .await
    .then_expect_events(vec![ignored(
        StripeReport::Failure,
        "failure created at 2026-03-01 10:08:00 UTC precedes the success at 2026-03-01 10:10:00 UTC; a succeeded payment is never downgraded",
        "evt_fail",
        8,
    )]);
}

#[tokio::test]
async fn a_second_failed_attempt_counts_as_attempt_two() {
    given(vec![checkout_started(eur(1000)), failed(1, "evt_fail", 8)])
        .when_async(failure("evt_fail_2", 9))
        .await
        .then_expect_events(vec![failed(2, "evt_fail_2", 9)]);
}

#[tokio::test]
async fn a_stripe_event_delivered_twice_is_recorded_once() {
    given(vec![checkout_started(eur(1000)), failed(1, "evt_fail", 8)])
        .when_async(failure("evt_fail", 8))
        .await
        .then_expect_events(vec![ignored(
            StripeReport::Failure,
            "Stripe event evt_fail was already recorded",
            "evt_fail",
            8,
        )]);
}

// --- Refunds reported by Stripe ---

#[tokio::test]
async fn a_refund_reported_before_the_success_is_kept_until_the_success_arrives() {
    given(vec![checkout_started(eur(1000))])
        .when_async(refund_report(1000, "evt_refund", 15))
        .await
        .then_expect_events(vec![refund_recorded(
            1000,
            1000,
            PaymentStatus::Pending,
            "evt_refund",
            15,
        )]);
    given(vec![
        checkout_started(eur(1000)),
        refund_recorded(1000, 1000, PaymentStatus::Pending, "evt_refund", 15),
    ])
    .when_async(confirm(eur(1000), "evt_success", 10))
    .await
    .then_expect_events(vec![succeeded(eur(1000), PaymentStatus::Refunded)]);
}

#[tokio::test]
async fn a_partial_then_full_refund_moves_through_partially_refunded_to_refunded() {
    let paid = vec![
        checkout_started(eur(1000)),
        succeeded(eur(1000), PaymentStatus::Succeeded),
    ];
    given(paid.clone())
        .when_async(refund_report(400, "evt_refund_1", 15))
        .await
        .then_expect_events(vec![refund_recorded(
            400,
            400,
            PaymentStatus::PartiallyRefunded,
            "evt_refund_1",
            15,
        )]);
    given(paid)
        .and(vec![refund_recorded(
            400,
            400,
            PaymentStatus::PartiallyRefunded,
            "evt_refund_1",
            15,
        )])
        .when_async(refund_report(1000, "evt_refund_2", 16))
        .await
        .then_expect_events(vec![refund_recorded(
            1000,
            600,
            PaymentStatus::Refunded,
            "evt_refund_2",
            16,
        )]);
}

#[tokio::test]
async fn an_older_refund_total_arriving_late_never_lowers_the_total() {
    given(vec![
        checkout_started(eur(1000)),
        succeeded(eur(1000), PaymentStatus::Succeeded),
        refund_recorded(700, 700, PaymentStatus::PartiallyRefunded, "evt_refund_2", 16),
    ])
    .when_async(refund_report(400, "evt_refund_1", 15))
    .await
    .then_expect_events(vec![PaymentEvent::StripeReportIgnored {
        report: StripeReport::Refund,
        reason: "Stripe reported 400 eur refunded in total, not above the 700 eur already recorded; an older report never lowers the total".to_owned(),
        stripe_event: stripe("evt_refund_1", 15),
        at: at(40),
    }]);
}

#[tokio::test]
async fn a_refund_total_above_the_amount_received_is_refused() {
    // A partial capture collected 600 of the 1000 price; 700 refunded cannot be true.
    given(vec![
        checkout_started(eur(1000)),
        succeeded(eur(600), PaymentStatus::Succeeded),
    ])
    .when_async(refund_report(700, "evt_refund", 15))
    .await
    .then_expect_error(PaymentError::RefundExceedsAmountReceived {
        reported: eur(700),
        limit: eur(600),
    });
}

// --- Refunds we request ---

#[tokio::test]
async fn requesting_a_refund_journals_who_why_and_how_much_without_calling_stripe() {
    let (gateway, services) = fake();
    PaymentTest::with(services)
        .given(vec![
            checkout_started(eur(1000)),
            succeeded(eur(1000), PaymentStatus::Succeeded),
        ])
        .when_async(request_refund(7, Some(eur(300))))
        .await
        .then_expect_events(vec![refund_ordered(7, 300)]);
    assert!(
        gateway.calls().is_empty(),
        "Stripe is asked by the refund job, never inside the command"
    );
}

#[test]
fn the_refund_job_asks_stripe_with_a_key_derived_from_the_request() {
    let mut payment = Payment::default();
    for event in [
        checkout_started(eur(1000)),
        succeeded(eur(1000), PaymentStatus::Succeeded),
        refund_ordered(7, 300),
    ] {
        payment.apply(event);
    }
    assert_eq!(
        payment.refund_submission(Uuid::from_u128(7)),
        Some(RefundRequest {
            payment_intent_id: PI.to_owned(),
            amount: eur(300),
            reason: "guest could not open the door".to_owned(),
            idempotency_key: format!("latchkey-refund-{}", Uuid::from_u128(7)),
            payment_id: PAYMENT_ID,
            refund_request_id: Uuid::from_u128(7),
        })
    );
    assert_eq!(payment.refund_submission(Uuid::from_u128(8)), None);
}

#[tokio::test]
async fn the_same_refund_request_sent_twice_refunds_once() {
    given(vec![
        checkout_started(eur(1000)),
        succeeded(eur(1000), PaymentStatus::Succeeded),
        refund_ordered(7, 300),
    ])
    .when_async(request_refund(7, Some(eur(300))))
    .await
    .then_expect_events(vec![]);
}

#[tokio::test]
async fn a_refund_request_above_what_was_received_is_refused() {
    given(vec![
        checkout_started(eur(1000)),
        succeeded(eur(1000), PaymentStatus::Succeeded),
        refund_recorded(400, 400, PaymentStatus::PartiallyRefunded, "evt_refund", 15),
    ])
    .when_async(request_refund(8, Some(eur(700))))
    .await
    .then_expect_error(PaymentError::RefundExceedsRefundable {
        requested: eur(700),
        refundable: eur(600),
    });
}

#[tokio::test]
async fn refunds_requested_but_not_yet_reported_count_against_the_refundable_amount() {
    // Two operators clicking "refund 6.00" at once must not refund 12.00 of a 10.00 payment.
    given(vec![
        checkout_started(eur(1000)),
        succeeded(eur(1000), PaymentStatus::Succeeded),
        refund_ordered(7, 600),
    ])
    .when_async(request_refund(8, Some(eur(600))))
    .await
    .then_expect_error(PaymentError::RefundExceedsRefundable {
        requested: eur(600),
        refundable: eur(400),
    });
}

#[tokio::test]
async fn a_refund_without_an_amount_refunds_the_remainder() {
    given(vec![
        checkout_started(eur(1000)),
        succeeded(eur(1000), PaymentStatus::Succeeded),
        refund_recorded(250, 250, PaymentStatus::PartiallyRefunded, "evt_refund", 15),
    ])
    .when_async(request_refund(9, None))
    .await
    .then_expect_events(vec![rest_ordered(9, 750)]);
}

#[tokio::test]
async fn a_refund_of_an_unpaid_payment_is_refused() {
    given(vec![checkout_started(eur(1000))])
        .when_async(request_refund(7, Some(eur(100))))
        .await
        .then_expect_error_message(
            "payment is pending; only a succeeded or partially refunded payment can be refunded",
        );
}

#[tokio::test]
async fn a_refund_stripe_refuses_is_recorded_and_frees_its_reservation() {
    let paid = vec![
        checkout_started(eur(1000)),
        succeeded(eur(1000), PaymentStatus::Succeeded),
        refund_ordered(7, 300),
    ];
    let refused = PaymentEvent::RefundSubmissionFailed {
        refund_request_id: Uuid::from_u128(7),
        reason: "charge already refunded".to_owned(),
        at: at(51),
    };
    given(paid.clone())
        .when_async(PaymentCommand::RecordRefundSubmission {
            refund_request_id: Uuid::from_u128(7),
            outcome: RefundSubmissionOutcome::Refused {
                reason: "charge already refunded".to_owned(),
            },
            actor: Actor::System,
            at: at(51),
        })
        .await
        .then_expect_events(vec![refused.clone()]);
    given(paid)
        .and(vec![refused])
        .when_async(request_refund(8, None))
        .await
        .then_expect_events(vec![rest_ordered(8, 1000)]);
}

// --- Manual capture ---

#[tokio::test]
async fn an_authorization_records_the_capturable_amount() {
    given(vec![checkout_started(eur(1000))])
        .when_async(PaymentCommand::RecordAuthorization {
            payment_intent_id: PI.to_owned(),
            amount_capturable: eur(1000),
            stripe_event: stripe("evt_auth", 5),
            actor: Actor::Stripe,
            at: at(6),
        })
        .await
        .then_expect_events(vec![authorized(eur(1000))]);
}

#[tokio::test]
async fn a_partial_capture_succeeds_with_the_smaller_amount_received() {
    given(vec![
        checkout_started(eur(1000)),
        authorized(eur(1000)),
        PaymentEvent::PaymentCaptureRequested {
            payment_intent_id: PI.to_owned(),
            amount_to_capture: eur(600),
            at: at(7),
        },
    ])
    .when_async(confirm(eur(600), "evt_success", 10))
    .await
    .then_expect_events(vec![succeeded(eur(600), PaymentStatus::Succeeded)]);
}

#[tokio::test]
async fn capture_more_than_authorized_is_rejected() {
    given(vec![checkout_started(eur(1000)), authorized(eur(800))])
        .when_async(PaymentCommand::CapturePayment {
            amount_to_capture: Some(eur(900)),
            actor: Actor::System,
            at: at(7),
        })
        .await
        .then_expect_error(PaymentError::CaptureExceedsAuthorization {
            requested: eur(900),
            capturable: eur(800),
        });
}

#[tokio::test]
async fn capture_of_a_payment_that_is_not_authorized_is_rejected() {
    given(vec![checkout_started(eur(1000))])
        .when_async(PaymentCommand::CapturePayment {
            amount_to_capture: None,
            actor: Actor::System,
            at: at(7),
        })
        .await
        .then_expect_error(PaymentError::NotCapturable {
            status: PaymentStatus::Pending,
        });
}

// --- Cancellation, expiry, dispute ---

#[tokio::test]
async fn a_cancellation_never_undoes_a_success() {
    given(vec![
        checkout_started(eur(1000)),
        succeeded(eur(1000), PaymentStatus::Succeeded),
    ])
    .when_async(PaymentCommand::RecordCancellation {
        payment_intent_id: PI.to_owned(),
        cancellation_reason: None,
        stripe_event: stripe("evt_cancel", 12),
        actor: Actor::Stripe,
        at: at(20),
    })
    .await
    .then_expect_events(vec![ignored(
        StripeReport::Cancellation,
        "payment is already succeeded; money received is never undone by a cancellation or expiry",
        "evt_cancel",
        12,
    )]);
}

#[tokio::test]
async fn an_expired_checkout_is_expired_and_money_arriving_later_still_counts() {
    let expired = PaymentEvent::CheckoutExpired {
        checkout_session_id: "cs_1".to_owned(),
        status: PaymentStatus::Expired,
        stripe_event: stripe("evt_expired", 60),
        at: at(61),
    };
    given(vec![checkout_started(eur(1000))])
        .when_async(PaymentCommand::RecordCheckoutExpired {
            checkout_session_id: "cs_1".to_owned(),
            stripe_event: stripe("evt_expired", 60),
            actor: Actor::Stripe,
            at: at(61),
        })
        .await
        .then_expect_events(vec![expired.clone()]);
    given(vec![checkout_started(eur(1000)), expired])
        .when_async(confirm(eur(1000), "evt_success", 10))
        .await
        .then_expect_events(vec![succeeded(eur(1000), PaymentStatus::Succeeded)]);
}

#[tokio::test]
async fn a_dispute_flags_the_payment_without_changing_its_status() {
    given(vec![
        checkout_started(eur(1000)),
        succeeded(eur(1000), PaymentStatus::Succeeded),
    ])
    .when_async(PaymentCommand::RecordDispute {
        dispute_id: "dp_1".to_owned(),
        amount: eur(1000),
        reason: "fraudulent".to_owned(),
        stripe_event: stripe("evt_dispute", 90),
        actor: Actor::Stripe,
        at: at(91),
    })
    .await
    .then_expect_events(vec![PaymentEvent::PaymentDisputed {
        dispute_id: "dp_1".to_owned(),
        amount: eur(1000),
        reason: "fraudulent".to_owned(),
        stripe_event: stripe("evt_dispute", 90),
        at: at(91),
    }]);
}

// --- Replay and serialization ---

#[tokio::test]
async fn replaying_a_payment_reproduces_its_state_exactly() {
    let (_, services) = fake();
    let commands = vec![
        start_checkout(eur(1000)),
        failure("evt_fail", 8),
        refund_report(300, "evt_refund_1", 15),
        confirm(eur(1000), "evt_success", 10),
        confirm(eur(1000), "evt_success_again", 11),
        request_refund(7, Some(eur(200))),
        refund_report(500, "evt_refund_2", 16),
        refund_report(300, "evt_refund_1", 15),
    ];
    let (live, events) = run::<Payment>(commands, &services).await;
    assert_eq!(live.status(), PaymentStatus::PartiallyRefunded);
    assert_eq!(live.amount_refunded(), Some(eur(500)));
    assert_eq!(live.amount_received(), Some(eur(1000)));
    assert_replay_reproduces(&live, &events);
}

#[test]
fn events_are_tagged_with_their_type_and_versioned() {
    let event = succeeded(eur(1000), PaymentStatus::Succeeded);
    assert_eq!(event.event_type(), "PaymentSucceeded");
    assert_eq!(event.event_version(), "1");
    let json = serde_json::to_value(&event).unwrap();
    assert_eq!(json["type"], "PaymentSucceeded");
    assert_eq!(json["status"], "succeeded");
    assert_eq!(json["amount_received"]["amount_minor"], 1000);
}

// --- Order independence ---

/// One consistent history of Stripe facts for a payment whose price is `price`.
#[derive(Debug, Clone)]
struct History {
    price: i64,
    received: i64,
    refund_totals: Vec<i64>,
    with_failure: bool,
    with_authorization: bool,
}

fn history() -> impl Strategy<Value = History> {
    (100i64..10_000)
        .prop_flat_map(|price| (Just(price), 1..=price))
        .prop_flat_map(|(price, received)| {
            (
                Just(price),
                Just(received),
                prop::collection::vec(1..=received, 0..4),
                any::<bool>(),
                any::<bool>(),
            )
        })
        .prop_map(
            |(price, received, mut refund_totals, with_failure, with_authorization)| {
                // Stripe's cumulative totals rise over time, so later events carry larger ones.
                refund_totals.sort_unstable();
                History {
                    price,
                    received,
                    refund_totals,
                    with_failure,
                    with_authorization,
                }
            },
        )
}

impl History {
    /// The facts in the order Stripe created them: failure, authorization, success, refunds.
    fn facts(&self) -> Vec<PaymentCommand> {
        let mut facts = Vec::new();
        if self.with_failure {
            facts.push(failure("evt_fail", 1));
        }
        if self.with_authorization {
            facts.push(PaymentCommand::RecordAuthorization {
                payment_intent_id: PI.to_owned(),
                amount_capturable: eur(self.price),
                stripe_event: stripe("evt_auth", 2),
                actor: Actor::Stripe,
                at: at(2),
            });
        }
        facts.push(confirm(eur(self.received), "evt_success", 3));
        for (index, total) in self.refund_totals.iter().enumerate() {
            let minute = 4 + i64::try_from(index).unwrap();
            facts.push(refund_report(
                *total,
                &format!("evt_refund_{index}"),
                minute,
            ));
        }
        facts
    }

    fn expected(&self) -> (PaymentStatus, i64) {
        let refunded = self.refund_totals.last().copied().unwrap_or(0);
        let status = match refunded {
            0 => PaymentStatus::Succeeded,
            total if total < self.received => PaymentStatus::PartiallyRefunded,
            _ => PaymentStatus::Refunded,
        };
        (status, refunded)
    }
}

/// Applies facts through `handle` and `apply` directly, without the test framework.
fn settle(price: i64, facts: Vec<PaymentCommand>) -> Payment {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let services = fake().1;
    runtime.block_on(async {
        let mut payment = Payment::default();
        payment.apply(checkout_started(eur(price)));
        for fact in facts {
            let sink = EventSink::default();
            payment
                .handle(fact.clone(), &services, &sink)
                .await
                .unwrap();
            let events = sink.collect().await;
            assert!(
                !events.is_empty(),
                "every Stripe fact leaves a trace: {fact:?}"
            );
            // At every step, never more refunded than received (or than the price, before
            // the success is known).
            let limit = payment.amount_received().unwrap_or(eur(price));
            let refunded = payment.amount_refunded().unwrap();
            assert!(refunded.amount_minor <= limit.amount_minor);
        }
        payment
    })
}

fn with_duplicates(
    facts: Vec<PaymentCommand>,
    duplicated: &[prop::sample::Index],
) -> Vec<PaymentCommand> {
    let mut all = facts.clone();
    for index in duplicated {
        all.push(index.get(&facts).clone());
    }
    all
}

proptest! {
    #[test]
    fn the_final_status_and_refunded_total_do_not_depend_on_the_order_of_stripe_facts(
        (history, shuffled) in history().prop_flat_map(|history| {
            let facts = history.facts();
            (Just(history), prop::collection::vec(any::<prop::sample::Index>(), 0..3))
                .prop_flat_map(move |(history, duplicated)| {
                    let all = with_duplicates(facts.clone(), &duplicated);
                    (Just(history), Just(all).prop_shuffle())
                })
        })
    ) {
        let canonical = settle(history.price, history.facts());
        let shuffled = settle(history.price, shuffled);
        let (status, refunded) = history.expected();
        prop_assert_eq!(canonical.status(), status);
        prop_assert_eq!(shuffled.status(), status);
        prop_assert_eq!(shuffled.amount_refunded(), Some(eur(refunded)));
        prop_assert_eq!(shuffled.amount_received(), Some(eur(history.received)));
        prop_assert_eq!(shuffled.amount_refunded(), canonical.amount_refunded());
    }
}

/// Facts of a payment that never collected money: which of them Stripe reported.
fn unpaid_facts(
    with_failure: bool,
    with_authorization: bool,
    with_cancellation: bool,
    with_expiry: bool,
) -> Vec<PaymentCommand> {
    let mut facts = Vec::new();
    if with_failure {
        facts.push(failure("evt_fail", 1));
    }
    if with_authorization {
        facts.push(PaymentCommand::RecordAuthorization {
            payment_intent_id: PI.to_owned(),
            amount_capturable: eur(1000),
            stripe_event: stripe("evt_auth", 2),
            actor: Actor::Stripe,
            at: at(2),
        });
    }
    if with_cancellation {
        facts.push(PaymentCommand::RecordCancellation {
            payment_intent_id: PI.to_owned(),
            cancellation_reason: Some("abandoned".to_owned()),
            stripe_event: stripe("evt_cancel", 3),
            actor: Actor::Stripe,
            at: at(3),
        });
    }
    if with_expiry {
        facts.push(PaymentCommand::RecordCheckoutExpired {
            checkout_session_id: "cs_1".to_owned(),
            stripe_event: stripe("evt_expired", 4),
            actor: Actor::Stripe,
            at: at(4),
        });
    }
    facts
}

proptest! {
    #[test]
    fn an_unpaid_payment_reaches_the_same_status_in_any_order(
        (flags, shuffled) in (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>())
            .prop_flat_map(|flags| {
                let facts = unpaid_facts(flags.0, flags.1, flags.2, flags.3);
                (Just(flags), prop::collection::vec(any::<prop::sample::Index>(), 0..3))
                    .prop_flat_map(move |(flags, duplicated)| {
                        let all = if facts.is_empty() {
                            facts.clone()
                        } else {
                            with_duplicates(facts.clone(), &duplicated)
                        };
                        (Just(flags), Just(all).prop_shuffle())
                    })
            })
    ) {
        let (with_failure, with_authorization, with_cancellation, with_expiry) = flags;
        let expected = if with_expiry {
            PaymentStatus::Expired
        } else if with_cancellation {
            PaymentStatus::Cancelled
        } else if with_authorization {
            PaymentStatus::Authorized
        } else if with_failure {
            PaymentStatus::Failed
        } else {
            PaymentStatus::Pending
        };
        prop_assert_eq!(settle(1000, shuffled).status(), expected);
    }
}

#[tokio::test]
async fn refunding_the_rest_of_a_fully_refunded_payment_is_already_done() {
    // Nothing is left to refund (an automatic refund racing an operator's), so nothing is
    // journalled and nothing will be asked of Stripe.
    let (gateway, services) = fake();
    TestFramework::<Payment>::with(services)
        .given(vec![
            checkout_started(eur(1000)),
            succeeded(eur(1000), PaymentStatus::Succeeded),
            refund_recorded(1000, 1000, PaymentStatus::Refunded, "evt_refund", 15),
        ])
        .when_async(request_refund(7, None))
        .await
        .then_expect_events(vec![]);
    assert!(gateway.calls().is_empty());
}

#[tokio::test]
async fn a_partial_refund_of_a_fully_refunded_payment_is_refused() {
    given(vec![
        checkout_started(eur(1000)),
        succeeded(eur(1000), PaymentStatus::Succeeded),
        refund_recorded(1000, 1000, PaymentStatus::Refunded, "evt_refund", 15),
    ])
    .when_async(request_refund(8, Some(eur(100))))
    .await
    .then_expect_error(PaymentError::NotRefundable {
        status: PaymentStatus::Refunded,
    });
}

#[test]
fn a_checkout_started_without_an_offer_still_loads() {
    // A journal written before offers were locked: no `offer` field at all.
    let stored = serde_json::json!({"type": "CheckoutStarted",
        "payment_id": PAYMENT_ID, "target": {"kind": "door", "door_uid": "7001"},
        "price": {"amount_minor": 500, "currency": "eur"},
        "guest_email": "guest@example.com", "at": at(0)});
    let event: PaymentEvent = serde_json::from_value(stored).unwrap();
    let PaymentEvent::CheckoutStarted { offer, .. } = &event else {
        panic!("{event:?}");
    };
    assert_eq!(offer, &None);
    let mut payment = Payment::default();
    Aggregate::apply(&mut payment, event);
    assert!(payment.locked_offer().is_none());
}

#[tokio::test]
async fn the_offer_is_part_of_what_checkout_locks() {
    let offer = LockedOffer {
        minutes: 45,
        target_name: "Front door".to_owned(),
        plan_name: None,
        hash: "abc".to_owned(),
    };
    let mut command = start_checkout(eur(500));
    if let PaymentCommand::StartCheckout { offer: slot, .. } = &mut command {
        *slot = Some(Box::new(offer.clone()));
    }
    let events = PaymentTest::with(fake().1)
        .given_no_previous_events()
        .when_async(command.clone())
        .await
        .inspect_result()
        .unwrap();
    let mut payment = Payment::default();
    for event in events {
        Aggregate::apply(&mut payment, event);
    }
    assert_eq!(payment.locked_offer(), Some(&offer));
}
