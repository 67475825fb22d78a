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

async fn a_refund_post_retried_with_its_idempotency_key_refunds_once(backend: Backend) {
    let world = crate::device_sessions::world(backend).await;
    let payment_id = pay(&world).await;
    assert!(
        wait_for(|| async { payment_status(&world, payment_id).await == PaymentStatus::Succeeded })
            .await,
        "captured"
    );
    let path = format!("/api/payments/{payment_id}/refund");
    let post = |key: &str, body: serde_json::Value| {
        let request = world
            .app
            .client
            .post(format!("{}{path}", world.app.address))
            .bearer_auth(ADMIN_TOKEN)
            .header("Idempotency-Key", key)
            .json(&body);
        async move { request.send().await.unwrap() }
    };
    let body = json!({"amount": 100, "reason": "slow spin"});
    let first = post("retry-me", body.clone()).await;
    assert_eq!(first.status(), 202);
    let first: serde_json::Value = first.json().await.unwrap();
    // The client timed out and sends the same request again, before and after Stripe.
    let again = post("retry-me", body.clone()).await;
    assert_eq!(again.status(), 202);
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(again, first, "the same key gets the same answer");
    assert!(
        wait_for(|| async { amount_refunded(&world, payment_id).await == 100 }).await,
        "refunded"
    );
    let late = post("retry-me", body).await;
    assert_eq!(late.status(), 202);
    let other = post("retry-me", json!({"amount": 150, "reason": "slow spin"})).await;
    assert_eq!(
        other.status(),
        409,
        "the same key with another body is refused"
    );
    let long_key = post(&"k".repeat(256), json!({"amount": 1})).await;
    assert_eq!(long_key.status(), 400);
    assert!(
        wait_for(|| async {
            latchkey::workflows::schedule::pending(&world.app.database)
                .await
                .unwrap()
                == 0
        })
        .await,
        "the refund job is done"
    );
    assert_eq!(refund_amounts_asked(&world), vec![100], "one Stripe refund");
    assert_eq!(amount_refunded(&world, payment_id).await, 100);
    world.app.stop().await;
}

on_both_backends!(
    a_refund_post_retried_with_its_idempotency_key_refunds_once,
    a_slow_stripe_answer_then_the_rest_refunds_exactly_the_rest,
    a_refund_that_fails_later_takes_the_refunded_total_back_down,
);
