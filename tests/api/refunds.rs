//! Refunds end to end against the Stripe simulator: Stripe's answer slower than its own
//! webhooks, "refund the rest", and a refund that fails after it was reported (issue 13).

use std::time::Duration;

use latchkey_aggregates::payment::PaymentStatus;
use latchkey_aggregates::session::SessionState;
use serde_json::json;
use uuid::Uuid;

use crate::device_sessions::{device_is_free, pay, payment_status, session_state, wait_for, World};
use crate::helpers::{Backend, ADMIN_TOKEN};
use crate::on_both_backends;

/// The `amount` of each refund Stripe created (answers replayed for a repeated key are not
/// new refunds), in order.
fn refund_amounts_asked(world: &World) -> Vec<i64> {
    world
        .sims
        .stripe
        .requests()
        .iter()
        .filter(|request| {
            request.path == "/v1/refunds" && !request.replayed && request.status == 200
        })
        .map(|request| {
            url::form_urlencoded::parse(request.body.as_bytes())
                .find(|(key, _)| key == "amount")
                .and_then(|(_, value)| value.parse().ok())
                .unwrap_or(-1)
        })
        .collect()
}

async fn amount_refunded(world: &World, payment_id: Uuid) -> i64 {
    let (payment, _) = world
        .app
        .state
        .buses
        .payments
        .load(&payment_id.to_string())
        .await
        .unwrap();
    payment
        .amount_refunded()
        .map_or(0, |money| money.amount_minor)
}

async fn count_events(world: &World, payment_id: Uuid, event_type: &str) -> usize {
    // Stripe's answers are journalled as `RefundSubmitted` unless its webhooks came first.
    latchkey::store::journal::Journal::new(world.app.database.clone())
        .aggregate_events("Payment", &payment_id.to_string(), None)
        .await
        .unwrap()
        .iter()
        .filter(|event| event.event_type == event_type)
        .count()
}

async fn refund(world: &World, payment_id: Uuid, body: serde_json::Value) {
    let response = world
        .app
        .post_json(
            &format!("/api/payments/{payment_id}/refund"),
            Some(ADMIN_TOKEN),
            &body,
        )
        .await;
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
}

async fn a_slow_stripe_answer_then_the_rest_refunds_exactly_the_rest(backend: Backend) {
    let world = crate::device_sessions::world(backend).await;
    let payment_id = pay(&world).await;
    assert!(
        wait_for(|| async { payment_status(&world, payment_id).await == PaymentStatus::Succeeded })
            .await,
        "the session runs and the 300 is captured"
    );
    // Stripe refunds at once and sends its webhooks, but its answer to us comes late.
    world
        .sims
        .stripe
        .delay_next_answers(1, Duration::from_secs(3));
    refund(
        &world,
        payment_id,
        json!({"amount": 100, "reason": "slow spin"}),
    )
    .await;
    assert!(
        wait_for(|| async { amount_refunded(&world, payment_id).await == 100 }).await,
        "the webhooks record the partial refund"
    );
    assert_eq!(
        count_events(&world, payment_id, "RefundSubmitted").await,
        0,
        "Stripe's answer is still on its way"
    );
    refund(&world, payment_id, json!({"reason": "broken machine"})).await;
    assert!(
        wait_for(|| async { payment_status(&world, payment_id).await == PaymentStatus::Refunded })
            .await,
        "the rest is refunded; the payment is {:?}",
        payment_status(&world, payment_id).await
    );
    assert_eq!(
        refund_amounts_asked(&world),
        vec![100, 200],
        "Stripe was asked for the partial refund, then for exactly the rest"
    );
    assert_eq!(amount_refunded(&world, payment_id).await, 300);
    assert!(
        wait_for(|| async {
            session_state(&world, payment_id).await == Some(SessionState::ForceEnded)
        })
        .await,
        "the full refund ends the session"
    );
    assert!(
        wait_for(|| async { !world.sims.relay_is_on() }).await,
        "and switches the relay OFF"
    );
    assert!(
        wait_for(|| async { device_is_free(&world).await }).await,
        "the device is free again"
    );
    assert!(
        wait_for(|| async {
            latchkey::workflows::schedule::pending(&world.app.database)
                .await
                .unwrap()
                == 0
        })
        .await,
        "the slow answer came back and the refund jobs are done"
    );
    assert_eq!(
        amount_refunded(&world, payment_id).await,
        300,
        "the late answer is counted nowhere twice"
    );
    assert_eq!(refund_amounts_asked(&world), vec![100, 200]);
    world.app.stop().await;
}

async fn a_refund_that_fails_later_takes_the_refunded_total_back_down(backend: Backend) {
    let world = crate::device_sessions::world(backend).await;
    let payment_id = pay(&world).await;
    assert!(
        wait_for(|| async { payment_status(&world, payment_id).await == PaymentStatus::Succeeded })
            .await,
        "captured"
    );
    refund(
        &world,
        payment_id,
        json!({"amount": 120, "reason": "slow spin"}),
    )
    .await;
    assert!(
        wait_for(|| async { amount_refunded(&world, payment_id).await == 120 }).await,
        "the refund is recorded"
    );
    let refund_id = world
        .sims
        .stripe
        .events()
        .iter()
        .find(|event| event["type"] == "refund.created")
        .and_then(|event| event["data"]["object"]["id"].as_str().map(str::to_string))
        .expect("Stripe created a refund");
    world.sims.stripe.fail_refund(&refund_id).unwrap();
    assert!(
        wait_for(|| async { amount_refunded(&world, payment_id).await == 0 }).await,
        "refund.failed takes the total back down; it is {}",
        amount_refunded(&world, payment_id).await
    );
    assert_eq!(
        payment_status(&world, payment_id).await,
        PaymentStatus::Succeeded
    );
    // The whole payment can be refunded again.
    refund(&world, payment_id, json!({"reason": "try again"})).await;
    assert!(
        wait_for(|| async { payment_status(&world, payment_id).await == PaymentStatus::Refunded })
            .await,
        "refunded in full after the failure"
    );
    assert_eq!(refund_amounts_asked(&world), vec![120, 300]);
    world.app.stop().await;
}

on_both_backends!(
    a_slow_stripe_answer_then_the_rest_refunds_exactly_the_rest,
    a_refund_that_fails_later_takes_the_refunded_total_back_down,
);
