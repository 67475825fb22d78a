//! The offer locked at checkout (issue 14): a plan deleted while a guest is in checkout
//! changes nothing the guest bought, and nobody else waits behind it.

use latchkey_aggregates::session::SessionState;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::device_sessions::{state_on, wait_for, world};
use crate::helpers::{Backend, TestApp};
use crate::on_both_backends;
use crate::sim_helpers::{DUAL, PLUG};
use crate::workflow_parking::{parked, pay_dryer, register_dryer, set_washer_plans};

/// A washer checkout through the guest API: the payment, its Checkout Session and the
/// guest's status path (`/session/{token}`).
async fn checkout_washer(app: &TestApp) -> (Uuid, String, String) {
    let response = app
        .post_json(
            "/api/checkout/device/washer",
            None,
            &json!({"plan_id": "p30", "email": "a@example.com"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    let payment_id: Uuid = body["payment_id"].as_str().unwrap().parse().unwrap();
    let token = body["status_url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let (payment, _) = app
        .state
        .buses
        .payments
        .load(&payment_id.to_string())
        .await
        .unwrap();
    (
        payment_id,
        payment.checkout_session_id().unwrap().to_string(),
        token,
    )
}

async fn a_plan_deleted_during_checkout_still_runs_with_the_locked_minutes(backend: Backend) {
    let world = world(backend).await;
    let app = &world.app;
    register_dryer(app).await;
    let (payment_a, session_a, token_a) = checkout_washer(app).await;
    // The operator replaces the 30-minute plan while A is on Stripe's page.
    set_washer_plans(
        app,
        json!([{"plan_id": "p60", "name": "60 minutes", "minutes": 60, "price": 500, "currency": "eur"}]),
    )
    .await;
    world
        .sims
        .stripe
        .pay(&session_a, "4242424242424242")
        .unwrap();
    // B pays on the dryer meanwhile.
    let payment_b = pay_dryer(&world).await;

    assert!(
        wait_for(|| async { state_on(app, payment_a).await == Some(SessionState::Active) }).await,
        "A's session runs"
    );
    assert!(
        wait_for(|| async { state_on(app, payment_b).await == Some(SessionState::Active) }).await,
        "B's session runs"
    );
    assert!(
        world.sims.shelly.relay(PLUG, 0).unwrap().output,
        "A's relay is ON"
    );
    assert!(
        world.sims.shelly.relay(DUAL, 0).unwrap().output,
        "B's relay is ON"
    );
    let (session, _) = app
        .state
        .buses
        .sessions
        .load(&payment_a.to_string())
        .await
        .unwrap();
    assert_eq!(
        session.ends_at().unwrap() - session.started_at().unwrap(),
        chrono::Duration::minutes(30),
        "A gets the 30 minutes bought, not the new plan's 60"
    );
    assert!(parked(app).await.is_empty(), "nothing was parked");

    // The guest page shows the plan bought, and the offer's hash.
    let (payment, _) = app
        .state
        .buses
        .payments
        .load(&payment_a.to_string())
        .await
        .unwrap();
    let offer = payment.locked_offer().expect("an offer is locked").clone();
    assert_eq!(offer.minutes, 30);
    assert_eq!(offer.plan_name.as_deref(), Some("30 minutes"));
    let status: Value = app
        .get(&format!("/api/session/{token_a}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["plan"]["minutes"], 30, "{status}");
    assert_eq!(status["offer"]["hash"], offer.hash.as_str());
    let page = app
        .get(&format!("/session/{token_a}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains(&offer.hash[..12]), "{page}");
    world.app.stop().await;
}

on_both_backends!(a_plan_deleted_during_checkout_still_runs_with_the_locked_minutes);
