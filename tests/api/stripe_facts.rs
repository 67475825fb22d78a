//! Stripe events applied to payments: matching, duplicates, order, unknown payments.

use latchkey::payments::stripe_facts::{apply, RetryLater, StripeOutcome};
use latchkey::store::journal::Journal;
use latchkey_aggregates::payment::PaymentStatus;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::checkout::app_with_fake_stripe;
use crate::helpers::{Backend, TestApp};
use crate::on_both_backends;

fn stripe_event(id: &str, kind: &str, created: i64, object: Value) -> Value {
    json!({"id": id, "object": "event", "type": kind, "created": created, "livemode": false,
           "api_version": "2026-09-30.endive", "data": {"object": object}})
}

async fn started_door_payment(app: &TestApp) -> (Uuid, String) {
    let response = app
        .post_json(
            "/api/checkout/door/77",
            None,
            &json!({"email": "guest@example.com"}),
        )
        .await;
    let body: Value = response.json().await.unwrap();
    let payment_id: Uuid = body["payment_id"].as_str().unwrap().parse().unwrap();
    (payment_id, format!("pi_test_{}", payment_id.simple()))
}

fn succeeded(event_id: &str, payment_id: Uuid, intent: &str, created: i64) -> Value {
    stripe_event(
        event_id,
        "payment_intent.succeeded",
        created,
        json!({
        "id": intent, "object": "payment_intent", "amount": 1500, "amount_received": 1500, "currency": "eur",
        "status": "succeeded", "latest_charge": "ch_1", "metadata": {"latchkey_payment_id": payment_id.to_string()}}),
    )
}

fn refunded(event_id: &str, intent: &str, amount_refunded: i64, created: i64) -> Value {
    stripe_event(
        event_id,
        "charge.refunded",
        created,
        json!({
        "id": "ch_1", "object": "charge", "payment_intent": intent, "amount": 1500,
        "amount_refunded": amount_refunded, "currency": "eur", "metadata": {}}),
    )
}

async fn payment_state(app: &TestApp, payment_id: Uuid) -> (PaymentStatus, i64, i64) {
    let (payment, _) = app
        .state
        .buses
        .payments
        .load(&payment_id.to_string())
        .await
        .unwrap();
    (
        payment.status(),
        payment.amount_received().map_or(0, |m| m.amount_minor),
        payment.amount_refunded().map_or(0, |m| m.amount_minor),
    )
}

async fn event_types(app: &TestApp, payment_id: Uuid) -> Vec<String> {
    Journal::new(app.database.clone())
        .aggregate_events("Payment", &payment_id.to_string(), None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

async fn the_same_success_ten_times_is_one_success_fact(backend: Backend) {
    let (app, _) = app_with_fake_stripe(backend).await;
    let (payment_id, intent) = started_door_payment(&app).await;
    let event = succeeded("evt_1", payment_id, &intent, 1_700_000_000);
    for _ in 0..10 {
        let outcome = apply(&app.state.buses, &app.database, &event)
            .await
            .unwrap();
        assert_eq!(outcome, StripeOutcome::Applied { payment_id });
    }
    assert_eq!(
        payment_state(&app, payment_id).await,
        (PaymentStatus::Succeeded, 1500, 0)
    );
    let types = event_types(&app, payment_id).await;
    assert_eq!(
        types.iter().filter(|t| *t == "PaymentSucceeded").count(),
        1,
        "{types:?}"
    );
    app.stop().await;
}

async fn a_refund_before_the_success_converges_to_refunded(backend: Backend) {
    let (app, _) = app_with_fake_stripe(backend).await;
    let (payment_id, intent) = started_door_payment(&app).await;
    // The charge carries no metadata and arrives first: its payment is found through the
    // payment intent remembered at checkout.
    let refund = refunded("evt_r", &intent, 1500, 1_700_000_100);
    assert_eq!(
        apply(&app.state.buses, &app.database, &refund)
            .await
            .unwrap(),
        StripeOutcome::Applied { payment_id }
    );
    let success = succeeded("evt_s", payment_id, &intent, 1_700_000_000);
    apply(&app.state.buses, &app.database, &success)
        .await
        .unwrap();
    assert_eq!(
        payment_state(&app, payment_id).await,
        (PaymentStatus::Refunded, 1500, 1500)
    );
    app.stop().await;
}

async fn partial_then_full_refund_uses_stripe_s_cumulative_totals(backend: Backend) {
    let (app, _) = app_with_fake_stripe(backend).await;
    let (payment_id, intent) = started_door_payment(&app).await;
    apply(
        &app.state.buses,
        &app.database,
        &succeeded("evt_s", payment_id, &intent, 1),
    )
    .await
    .unwrap();
    apply(
        &app.state.buses,
        &app.database,
        &refunded("evt_r1", &intent, 500, 2),
    )
    .await
    .unwrap();
    assert_eq!(
        payment_state(&app, payment_id).await,
        (PaymentStatus::PartiallyRefunded, 1500, 500)
    );
    apply(
        &app.state.buses,
        &app.database,
        &refunded("evt_r2", &intent, 1500, 3),
    )
    .await
    .unwrap();
    // An older report arriving late never lowers the total.
    apply(
        &app.state.buses,
        &app.database,
        &refunded("evt_r1_again", &intent, 500, 2),
    )
    .await
    .unwrap();
    assert_eq!(
        payment_state(&app, payment_id).await,
        (PaymentStatus::Refunded, 1500, 1500)
    );
    app.stop().await;
}

async fn events_that_are_not_ours_are_ignored_with_a_reason(backend: Backend) {
    let (app, _) = app_with_fake_stripe(backend).await;
    let foreign = stripe_event(
        "evt_f",
        "payment_intent.succeeded",
        1,
        json!({
        "id": "pi_elsewhere", "amount_received": 100, "currency": "eur", "metadata": {}}),
    );
    let StripeOutcome::Ignored { reason } = apply(&app.state.buses, &app.database, &foreign)
        .await
        .unwrap()
    else {
        panic!("a foreign payment must be ignored")
    };
    assert!(reason.contains("outside Latchkey"), "{reason}");
    let unknown_type = stripe_event("evt_u", "customer.created", 1, json!({"id": "cus_1"}));
    assert!(matches!(
        apply(&app.state.buses, &app.database, &unknown_type)
            .await
            .unwrap(),
        StripeOutcome::Ignored { .. }
    ));
    // A refund for a charge we cannot place yet is retried, not dropped.
    let orphan = refunded("evt_o", "pi_not_yet_known", 100, 1);
    let error: RetryLater = apply(&app.state.buses, &app.database, &orphan)
        .await
        .unwrap_err();
    assert!(
        error.0.contains("not known yet") || error.0.contains("no payment"),
        "{}",
        error.0
    );
    app.stop().await;
}

async fn a_decline_then_a_success_still_succeeds(backend: Backend) {
    let (app, _) = app_with_fake_stripe(backend).await;
    let (payment_id, intent) = started_door_payment(&app).await;
    let failed = stripe_event(
        "evt_f",
        "payment_intent.payment_failed",
        1,
        json!({
        "id": intent, "metadata": {"latchkey_payment_id": payment_id.to_string()},
        "last_payment_error": {"code": "card_declined", "decline_code": "generic_decline", "message": "Your card was declined."}}),
    );
    apply(&app.state.buses, &app.database, &failed)
        .await
        .unwrap();
    assert_eq!(
        payment_state(&app, payment_id).await.0,
        PaymentStatus::Failed
    );
    let (payment, _) = app
        .state
        .buses
        .payments
        .load(&payment_id.to_string())
        .await
        .unwrap();
    assert!(payment
        .last_failure_reason()
        .unwrap()
        .contains("generic_decline"));
    apply(
        &app.state.buses,
        &app.database,
        &succeeded("evt_s", payment_id, &intent, 2),
    )
    .await
    .unwrap();
    assert_eq!(
        payment_state(&app, payment_id).await.0,
        PaymentStatus::Succeeded
    );
    app.stop().await;
}

on_both_backends!(
    the_same_success_ten_times_is_one_success_fact,
    a_refund_before_the_success_converges_to_refunded,
    partial_then_full_refund_uses_stripe_s_cumulative_totals,
    events_that_are_not_ours_are_ignored_with_a_reason,
    a_decline_then_a_success_still_succeeds,
);
