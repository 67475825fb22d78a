//! Guests start checkouts: the price is locked, Stripe is asked once, errors are clear.

use std::sync::Arc;

use latchkey::startup::BuildOptions;
use latchkey::store::journal::Journal;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, Backend, TestApp, TestDatabase, ADMIN_TOKEN};
use crate::on_both_backends;
use crate::support::{fake_gateways, FakeCheckout};

pub async fn app_with_fake_stripe(backend: Backend) -> (TestApp, Arc<FakeCheckout>) {
    let checkout = Arc::new(FakeCheckout::default());
    let options = BuildOptions {
        gateways: Some(fake_gateways(checkout.clone())),
        ..Default::default()
    };
    let app = spawn_app_with(TestDatabase::create(backend).await, options).await;
    let door = json!({"uid": "77", "name": "Room 7", "location": "Lyon", "time_zone": "Europe/Paris",
                      "price": 1500, "currency": "eur", "access_minutes": 60});
    assert_eq!(
        app.post_json("/api/doors", Some(ADMIN_TOKEN), &door)
            .await
            .status(),
        201
    );
    let device = json!({"uid": "dryer", "name": "Dryer", "location": "Lyon", "time_zone": "Europe/Paris",
                        "shelly_device_id": "shelly-1", "plans": [{"plan_id": "p30", "name": "30 min", "minutes": 30, "price": 300, "currency": "eur"}]});
    assert_eq!(
        app.post_json("/api/devices", Some(ADMIN_TOKEN), &device)
            .await
            .status(),
        201
    );
    (app, checkout)
}

async fn a_door_checkout_locks_the_price_and_returns_the_links(backend: Backend) {
    let (app, checkout) = app_with_fake_stripe(backend).await;
    let response = app
        .post_json(
            "/api/checkout/door/77",
            None,
            &json!({"email": "guest@example.com"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    let payment_id = body["payment_id"].as_str().unwrap().to_string();
    assert!(body["checkout_url"]
        .as_str()
        .unwrap()
        .starts_with("https://checkout.example/"));
    let status_url = body["status_url"].as_str().unwrap();
    assert!(status_url.starts_with("http://localhost:3000/access/"));
    assert_eq!(status_url.rsplit('/').next().unwrap().len(), 43);

    let requests = checkout.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].price.amount_minor, 1500);
    assert!(!requests[0].manual_capture);
    assert_eq!(
        requests[0].idempotency_key,
        format!("latchkey-checkout-{payment_id}")
    );

    // A later price change does not touch the started payment.
    app.patch_json("/api/doors/77", Some(ADMIN_TOKEN), &json!({"price": 9900}))
        .await;
    let events = Journal::new(app.database.clone())
        .aggregate_events("Payment", &payment_id, None)
        .await
        .unwrap();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, vec!["CheckoutStarted", "CheckoutSessionCreated"]);
    assert_eq!(events[0].payload["price"]["amount_minor"], 1500);
    assert_eq!(events[0].metadata["actor"], "guest");
    app.stop().await;
}

async fn a_device_checkout_asks_for_manual_capture(backend: Backend) {
    let (app, checkout) = app_with_fake_stripe(backend).await;
    let response = app
        .post_json(
            "/api/checkout/device/dryer",
            None,
            &json!({"plan_id": "p30", "email": "guest@example.com"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert!(body["status_url"].as_str().unwrap().contains("/session/"));
    let requests = checkout.requests.lock().unwrap().clone();
    assert!(requests[0].manual_capture);
    assert_eq!(requests[0].price.amount_minor, 300);
    let unknown_plan = app
        .post_json(
            "/api/checkout/device/dryer",
            None,
            &json!({"plan_id": "p99", "email": "guest@example.com"}),
        )
        .await;
    assert_eq!(unknown_plan.status(), 422);
    app.stop().await;
}

async fn checkout_refusals_are_clear(backend: Backend) {
    let (app, checkout) = app_with_fake_stripe(backend).await;
    let bad_email = app
        .post_json(
            "/api/checkout/door/77",
            None,
            &json!({"email": "not-an-email"}),
        )
        .await;
    assert_eq!(bad_email.status(), 422);
    let unknown = app
        .post_json(
            "/api/checkout/door/404",
            None,
            &json!({"email": "guest@example.com"}),
        )
        .await;
    assert_eq!(unknown.status(), 404);
    app.patch_json(
        "/api/doors/77",
        Some(ADMIN_TOKEN),
        &json!({"status": "maintenance"}),
    )
    .await;
    let paused = app
        .post_json(
            "/api/checkout/door/77",
            None,
            &json!({"email": "guest@example.com"}),
        )
        .await;
    assert_eq!(paused.status(), 409);
    app.patch_json(
        "/api/doors/77",
        Some(ADMIN_TOKEN),
        &json!({"status": "active"}),
    )
    .await;
    *checkout.fail_with.lock().unwrap() =
        Some("Your account cannot currently make live charges.".into());
    let upstream = app
        .post_json(
            "/api/checkout/door/77",
            None,
            &json!({"email": "guest@example.com"}),
        )
        .await;
    assert_eq!(upstream.status(), 502);
    let body: Value = upstream.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("cannot currently make live charges"));
    app.stop().await;
}

async fn checkout_without_stripe_is_503(backend: Backend) {
    let app = spawn_app(backend).await;
    let door = json!({"uid": "77", "name": "Room 7", "location": "Lyon", "time_zone": "Europe/Paris",
                      "price": 1500, "currency": "eur", "access_minutes": 60});
    app.post_json("/api/doors", Some(ADMIN_TOKEN), &door).await;
    let response = app
        .post_json(
            "/api/checkout/door/77",
            None,
            &json!({"email": "guest@example.com"}),
        )
        .await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("STRIPE_SECRET_KEY"));
    app.stop().await;
}

on_both_backends!(
    a_door_checkout_locks_the_price_and_returns_the_links,
    a_device_checkout_asks_for_manual_capture,
    checkout_refusals_are_clear,
    checkout_without_stripe_is_503,
);
