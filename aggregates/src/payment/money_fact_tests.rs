//! Given / when / then tests for the money facts Stripe may report beside the happy path:
//! an amount that is not the locked price, and what a dispute does to the money.

use cqrs_es::test::TestFramework;
use uuid::Uuid;

use super::services::testing::FakePaymentGateway;
use super::*;
use crate::test_support::{at, eur};
use crate::{Actor, Currency, Money};

type PaymentTest = TestFramework<Payment>;

const PAYMENT_ID: Uuid = Uuid::from_u128(0x2222);
const PI: &str = "pi_1";

fn given(events: Vec<PaymentEvent>) -> cqrs_es::test::AggregateTestExecutor<Payment> {
    let gateway = std::sync::Arc::new(FakePaymentGateway::new());
    PaymentTest::with(PaymentServices::new(gateway)).given(events)
}

fn stripe(id: &str, created_minute: i64) -> StripeEventRef {
    StripeEventRef {
        id: id.to_owned(),
        created: at(created_minute),
    }
}

fn started(price: Money) -> PaymentEvent {
    PaymentEvent::CheckoutStarted {
        payment_id: PAYMENT_ID,
        target: PaymentTarget::Door {
            door_uid: "7001".to_owned(),
        },
        price,
        guest_email: "guest@example.com".to_owned(),
        at: at(0),
        offer: None,
    }
}

fn confirm(amount: Money, event_id: &str) -> PaymentCommand {
    PaymentCommand::ConfirmPayment {
        payment_intent_id: PI.to_owned(),
        charge_id: None,
        amount_received: amount,
        stripe_event: stripe(event_id, 10),
        actor: Actor::Stripe,
        at: at(11),
    }
}

fn succeeded(amount: Money, event_id: &str) -> PaymentEvent {
    PaymentEvent::PaymentSucceeded {
        payment_intent_id: PI.to_owned(),
        charge_id: None,
        amount_received: amount,
        status: PaymentStatus::Succeeded,
        stripe_event: stripe(event_id, 10),
        at: at(11),
    }
}

fn mismatch(
    expected: Money,
    reported: Money,
    direction: AmountMismatchDirection,
    event_id: &str,
) -> PaymentEvent {
    PaymentEvent::PaymentAmountMismatch {
        expected,
        reported,
        direction,
        report: StripeReport::Success,
        stripe_event: stripe(event_id, 10),
        at: at(11),
    }
}

fn kwd(amount_minor: i64) -> Money {
    Money::new(amount_minor, Currency::parse("kwd").unwrap())
}

#[tokio::test]
async fn an_amount_below_the_price_is_recorded_and_holds_access() {
    given(vec![started(eur(1000))])
        .when_async(confirm(eur(600), "evt_under"))
        .await
        .then_expect_events(vec![
            succeeded(eur(600), "evt_under"),
            mismatch(
                eur(1000),
                eur(600),
                AmountMismatchDirection::Below,
                "evt_under",
            ),
        ]);
}

#[tokio::test]
async fn an_amount_above_the_price_is_refused_as_a_recorded_fact_not_an_error() {
    // The door's price went up to 15.00 after checkout: Stripe can only ever report the
    // 10.00 the guest agreed to; anything else is recorded as refused, never retried.
    given(vec![started(eur(1000))])
        .when_async(confirm(eur(1500), "evt_over"))
        .await
        .then_expect_events(vec![mismatch(
            eur(1000),
            eur(1500),
            AmountMismatchDirection::Above,
            "evt_over",
        )]);
}

#[tokio::test]
async fn another_currency_is_refused_as_a_recorded_fact() {
    given(vec![started(eur(1000))])
        .when_async(confirm(kwd(1000), "evt_kwd"))
        .await
        .then_expect_events(vec![mismatch(
            eur(1000),
            kwd(1000),
            AmountMismatchDirection::OtherCurrency,
            "evt_kwd",
        )]);
}

#[tokio::test]
async fn a_refused_amount_delivered_again_is_ignored_not_recorded_twice() {
    given(vec![
        started(eur(1000)),
        mismatch(
            eur(1000),
            eur(1500),
            AmountMismatchDirection::Above,
            "evt_over",
        ),
    ])
    .when_async(confirm(eur(1500), "evt_over"))
    .await
    .then_expect_events(vec![PaymentEvent::StripeReportIgnored {
        report: StripeReport::Success,
        reason: "Stripe event evt_over was already recorded".to_owned(),
        stripe_event: stripe("evt_over", 10),
        at: at(11),
    }]);
}

#[tokio::test]
async fn the_exact_price_records_no_mismatch() {
    given(vec![started(eur(1000))])
        .when_async(confirm(eur(1000), "evt_ok"))
        .await
        .then_expect_events(vec![succeeded(eur(1000), "evt_ok")]);
}

fn grant() -> PaymentCommand {
    PaymentCommand::GrantAccess {
        reason: "guest paid the rest in cash".to_owned(),
        actor: Actor::operator("alice"),
        at: at(20),
    }
}

#[tokio::test]
async fn an_operator_grants_access_to_a_held_payment() {
    given(vec![
        started(eur(1000)),
        succeeded(eur(600), "evt_under"),
        mismatch(
            eur(1000),
            eur(600),
            AmountMismatchDirection::Below,
            "evt_under",
        ),
    ])
    .when_async(grant())
    .await
    .then_expect_events(vec![PaymentEvent::PaymentAccessGranted {
        reason: "guest paid the rest in cash".to_owned(),
        actor: Actor::operator("alice"),
        at: at(20),
    }]);
}

#[tokio::test]
async fn a_payment_that_is_not_held_has_no_access_to_grant() {
    given(vec![started(eur(1000)), succeeded(eur(1000), "evt_ok")])
        .when_async(grant())
        .await
        .then_expect_error(PaymentError::AccessNotHeld {
            status: PaymentStatus::Succeeded,
        });
    given(vec![
        started(eur(1000)),
        succeeded(eur(600), "evt_under"),
        mismatch(
            eur(1000),
            eur(600),
            AmountMismatchDirection::Below,
            "evt_under",
        ),
        PaymentEvent::PaymentAccessGranted {
            reason: "once".to_owned(),
            actor: Actor::operator("alice"),
            at: at(20),
        },
    ])
    .when_async(grant())
    .await
    .then_expect_error(PaymentError::AccessNotHeld {
        status: PaymentStatus::Succeeded,
    });
}

// --- Disputes ---

fn dispute(update: DisputeUpdate, event_id: &str, minute: i64) -> PaymentCommand {
    PaymentCommand::RecordDisputeUpdate {
        dispute_id: "dp_1".to_owned(),
        amount: kwd(1250),
        update,
        stripe_event: stripe(event_id, minute),
        actor: Actor::Stripe,
        at: at(minute + 1),
    }
}

fn withdrawn(event_id: &str, minute: i64) -> PaymentEvent {
    PaymentEvent::DisputeFundsWithdrawn {
        dispute_id: "dp_1".to_owned(),
        amount: kwd(1250),
        stripe_event: stripe(event_id, minute),
        at: at(minute + 1),
    }
}

fn reinstated(event_id: &str, minute: i64) -> PaymentEvent {
    PaymentEvent::DisputeFundsReinstated {
        dispute_id: "dp_1".to_owned(),
        amount: kwd(1250),
        stripe_event: stripe(event_id, minute),
        at: at(minute + 1),
    }
}

fn closed(status: &str, event_id: &str, minute: i64) -> PaymentEvent {
    PaymentEvent::DisputeClosed {
        dispute_id: "dp_1".to_owned(),
        status: status.to_owned(),
        stripe_event: stripe(event_id, minute),
        at: at(minute + 1),
    }
}

fn paid_in_kwd() -> Vec<PaymentEvent> {
    vec![started(kwd(1250)), succeeded(kwd(1250), "evt_paid")]
}

fn closing(status: &str) -> DisputeUpdate {
    DisputeUpdate::Closed {
        status: status.to_owned(),
    }
}

#[tokio::test]
async fn funds_withdrawn_by_a_dispute_are_recorded_once() {
    given(paid_in_kwd())
        .when_async(dispute(DisputeUpdate::FundsWithdrawn, "evt_w", 50))
        .await
        .then_expect_events(vec![withdrawn("evt_w", 50)]);
    let mut history = paid_in_kwd();
    history.push(withdrawn("evt_w", 50));
    // A lost closure after the withdrawal moves no more money.
    given(history)
        .when_async(dispute(closing("lost"), "evt_lost", 60))
        .await
        .then_expect_events(vec![closed("lost", "evt_lost", 60)]);
}

#[tokio::test]
async fn a_lost_dispute_reported_before_its_withdrawal_withdraws_once() {
    given(paid_in_kwd())
        .when_async(dispute(closing("lost"), "evt_lost", 60))
        .await
        .then_expect_events(vec![
            withdrawn("evt_lost", 60),
            closed("lost", "evt_lost", 60),
        ]);
    let mut history = paid_in_kwd();
    history.extend([withdrawn("evt_lost", 60), closed("lost", "evt_lost", 60)]);
    given(history)
        .when_async(dispute(DisputeUpdate::FundsWithdrawn, "evt_w", 50))
        .await
        .then_expect_events(vec![PaymentEvent::StripeReportIgnored {
            report: StripeReport::Dispute,
            reason:
                "dispute dp_1: FundsWithdrawn changes nothing (withdrawn 1250 kwd, closed lost)"
                    .to_owned(),
            stripe_event: stripe("evt_w", 50),
            at: at(51),
        }]);
}

#[tokio::test]
async fn a_won_dispute_reinstates_what_was_withdrawn_once() {
    let mut history = paid_in_kwd();
    history.push(withdrawn("evt_w", 50));
    given(history.clone())
        .when_async(dispute(closing("won"), "evt_won", 70))
        .await
        .then_expect_events(vec![
            reinstated("evt_won", 70),
            closed("won", "evt_won", 70),
        ]);
    history.extend([reinstated("evt_won", 70), closed("won", "evt_won", 70)]);
    given(history)
        .when_async(dispute(DisputeUpdate::FundsReinstated, "evt_r", 65))
        .await
        .then_expect_events(vec![PaymentEvent::StripeReportIgnored {
            report: StripeReport::Dispute,
            reason: "dispute dp_1: FundsReinstated changes nothing (withdrawn 0 kwd, closed won)"
                .to_owned(),
            stripe_event: stripe("evt_r", 65),
            at: at(66),
        }]);
}

#[tokio::test]
async fn an_inquiry_closed_without_money_moves_none() {
    given(paid_in_kwd())
        .when_async(dispute(closing("warning_closed"), "evt_wc", 60))
        .await
        .then_expect_events(vec![closed("warning_closed", "evt_wc", 60)]);
}
