//! The whole money path against the Stripe simulator: our checkout → the simulator's
//! hosted page paid with a test card → a signed webhook → the Payment's status. And the
//! catch-up job recovering a payment whose webhooks never came.

use std::time::Duration;

use latchkey::sim::stripe::{DeliveryMode, StripeSimConfig, StripeSimHandle};
use latchkey::startup::BuildOptions;
use latchkey_aggregates::payment::PaymentStatus;
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::helpers::{
    eventually, spawn_app_with_settings, Backend, TestApp, TestDatabase, ADMIN_TOKEN,
};
use crate::on_both_backends;
use crate::stripe_support::{API_KEY, SECRET};

async fn app_and_stripe(backend: Backend) -> (TestApp, StripeSimHandle) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = latchkey::sim::stripe::spawn(
        listener,
        StripeSimConfig::new(API_KEY, vec![SECRET.to_string()]),
    )
    .unwrap();
    let base = sim.url();
    let app = spawn_app_with_settings(
        TestDatabase::create(backend).await,
        BuildOptions::default(),
        |settings| {
            settings.stripe.secret_key = Some(SecretString::from(API_KEY.to_string()));
            settings.stripe.api_base = Some(base.parse().unwrap());
            settings.stripe.webhook_secrets = vec![SecretString::from(SECRET.to_string())];
        },
    )
    .await;
    sim.set_webhook_url(format!("{}/api/stripe/webhook", app.address));
    let door = json!({"uid": "4410021", "name": "Room 12", "location": "Lyon", "time_zone": "Europe/Paris",
                      "price": 1500, "currency": "eur", "access_minutes": 60});
    assert_eq!(
        app.post_json("/api/doors", Some(ADMIN_TOKEN), &door)
            .await
            .status(),
        201
    );
    (app, sim)
}

/// Starts a door checkout through our API; returns the payment id and Stripe session id.
async fn checkout(app: &TestApp) -> (Uuid, String) {
    let response = app
        .post_json(
            "/api/checkout/door/4410021",
            None,
            &json!({"email": "guest@example.com"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    let payment_id: Uuid = body["payment_id"].as_str().unwrap().parse().unwrap();
    let (payment, _) = app
        .state
        .buses
        .payments
        .load(&payment_id.to_string())
        .await
        .unwrap();
    let session = payment.checkout_session_id().unwrap().to_string();
    assert!(body["checkout_url"].as_str().unwrap().contains(&session));
    (payment_id, session)
}

async fn status_becomes(app: &TestApp, payment_id: Uuid, expected: PaymentStatus) -> bool {
    eventually(200, Duration::from_millis(25), || async {
        let (payment, _) = app
            .state
            .buses
            .payments
            .load(&payment_id.to_string())
            .await
            .unwrap();
        payment.status() == expected
    })
    .await
}

async fn paying_with_4242_makes_the_payment_succeed(backend: Backend) {
    let (app, sim) = app_and_stripe(backend).await;
    let (payment_id, session) = checkout(&app).await;
    sim.pay(&session, "4242424242424242").unwrap();
    assert!(status_becomes(&app, payment_id, PaymentStatus::Succeeded).await);
    let (payment, _) = app
        .state
        .buses
        .payments
        .load(&payment_id.to_string())
        .await
        .unwrap();
    assert_eq!(payment.amount_received().unwrap().amount_minor, 1500);
    app.stop().await;
}

async fn a_declined_card_fails_the_payment_with_the_reason(backend: Backend) {
    let (app, sim) = app_and_stripe(backend).await;
    let (payment_id, session) = checkout(&app).await;
    let _ = sim.pay(&session, "4000000000000002");
    assert!(status_becomes(&app, payment_id, PaymentStatus::Failed).await);
    let (payment, _) = app
        .state
        .buses
        .payments
        .load(&payment_id.to_string())
        .await
        .unwrap();
    let reason = payment.last_failure_reason().unwrap().to_string();
    assert!(reason.contains("card_declined"), "{reason}");
    // The guest retries with a good card on the same checkout: it still succeeds.
    sim.pay(&session, "4242424242424242").unwrap();
    assert!(status_becomes(&app, payment_id, PaymentStatus::Succeeded).await);
    app.stop().await;
}

async fn catch_up_recovers_a_payment_whose_webhooks_never_came(backend: Backend) {
    let (app, sim) = app_and_stripe(backend).await;
    sim.set_delivery(DeliveryMode::Off);
    let (payment_id, session) = checkout(&app).await;
    sim.pay(&session, "4242424242424242").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (payment, _) = app
        .state
        .buses
        .payments
        .load(&payment_id.to_string())
        .await
        .unwrap();
    assert_eq!(
        payment.status(),
        PaymentStatus::Pending,
        "nothing was delivered"
    );
    let response = app
        .post_json("/api/stripe/catch-up", Some(ADMIN_TOKEN), &json!({}))
        .await;
    assert!(
        response.status().is_success(),
        "{}",
        response.text().await.unwrap()
    );
    assert!(status_becomes(&app, payment_id, PaymentStatus::Succeeded).await);
    app.stop().await;
}

on_both_backends!(
    paying_with_4242_makes_the_payment_succeed,
    a_declined_card_fails_the_payment_with_the_reason,
    catch_up_recovers_a_payment_whose_webhooks_never_came,
);
