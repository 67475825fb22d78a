//! Parking instead of halting (issue 14): a workflow reaction that fails for good for one
//! payment is parked where operators see it (API, health, dashboard), every other payment
//! keeps flowing, and a retry after the cause is fixed succeeds.

use latchkey::http::auth::Role;
use latchkey_aggregates::session::SessionState;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::dashboard_pages::{login, page, post_form};
use crate::device_sessions::{state_on, wait_for, world, World};
use crate::helpers::{Backend, TestApp, ADMIN_TOKEN};
use crate::on_both_backends;
use crate::sim_helpers::{DUAL, PLUG};

const CARD: &str = "4242424242424242";

pub(crate) async fn register_dryer(app: &TestApp) {
    let device = json!({"uid": "dryer", "name": "Dryer", "location": "Lyon", "time_zone": "Europe/Paris",
                        "shelly_device_id": DUAL, "shelly_channel": 0,
                        "plans": [{"plan_id": "d45", "name": "45 minutes", "minutes": 45, "price": 400, "currency": "eur"}]});
    let response = app
        .post_json("/api/devices", Some(ADMIN_TOKEN), &device)
        .await;
    assert_eq!(response.status(), 201);
}

pub(crate) async fn set_washer_plans(app: &TestApp, plans: Value) {
    let response = app
        .patch_json(
            "/api/devices/washer",
            Some(ADMIN_TOKEN),
            &json!({ "plans": plans }),
        )
        .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

/// A washer checkout as an instance from before locked offers journalled it: a
/// `CheckoutStarted` without `offer`, so the workflow falls back to the catalogue's plan.
async fn checkout_without_locked_offer(app: &TestApp) -> (Uuid, String) {
    use latchkey::cqrs::CommandMetadata;
    use latchkey::payments::checkout::CheckoutRequest;
    use latchkey_aggregates::payment::{PaymentCommand, PaymentTarget};
    use latchkey_aggregates::{Actor, Currency, Money};
    let payment_id = Uuid::new_v4();
    let target = PaymentTarget::Device {
        device_uid: "washer".into(),
        plan_id: "p30".into(),
    };
    let price = Money::new(300, Currency::parse("eur").unwrap());
    let metadata = CommandMetadata::new("guest", "checkout");
    let start = PaymentCommand::StartCheckout {
        payment_id,
        target: target.clone(),
        price: price.clone(),
        guest_email: "a@example.com".into(),
        actor: Actor::Guest,
        at: chrono::Utc::now(),
        offer: None,
    };
    let id = payment_id.to_string();
    app.state
        .buses
        .payments
        .execute(&id, start, metadata.clone())
        .await
        .unwrap();
    let created = app
        .state
        .gateways
        .current()
        .checkout
        .create_checkout(CheckoutRequest {
            payment_id,
            target,
            price,
            description: "Washer — 30 minutes".into(),
            guest_email: "a@example.com".into(),
            manual_capture: true,
            success_url: "http://localhost/ok".into(),
            cancel_url: "http://localhost/cancel".into(),
            idempotency_key: format!("latchkey-checkout-{payment_id}"),
            expires_at: None,
        })
        .await
        .unwrap();
    let record = PaymentCommand::RecordCheckoutSession {
        checkout_session_id: created.checkout_session_id.clone(),
        payment_intent_id: created.payment_intent_id.clone(),
        expires_at: created.expires_at,
        actor: Actor::Guest,
        at: chrono::Utc::now(),
    };
    app.state
        .buses
        .payments
        .execute(&id, record, metadata)
        .await
        .unwrap();
    (payment_id, created.checkout_session_id)
}

pub(crate) async fn parked(app: &TestApp) -> Vec<Value> {
    let response = app
        .get_with_token("/api/parked-reactions", ADMIN_TOKEN)
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["items"].as_array().unwrap().clone()
}

pub(crate) async fn pay_dryer(world: &World) -> Uuid {
    let response = world
        .app
        .post_json(
            "/api/checkout/device/dryer",
            None,
            &json!({"plan_id": "d45", "email": "b@example.com"}),
        )
        .await;
    let body: Value = response.json().await.unwrap();
    let payment_id: Uuid = body["payment_id"].as_str().unwrap().parse().unwrap();
    let (payment, _) = world
        .app
        .state
        .buses
        .payments
        .load(&payment_id.to_string())
        .await
        .unwrap();
    world
        .sims
        .stripe
        .pay(payment.checkout_session_id().unwrap(), CARD)
        .unwrap();
    payment_id
}

/// A's payment comes from a journal older than locked offers; its plan is deleted before
/// A pays, so the device workflow cannot know A's minutes: that reaction is parked, B on
/// the dryer is served meanwhile, and once the plan is back an operator's retry serves A.
async fn a_reaction_that_fails_for_one_payment_is_parked_and_others_keep_flowing(backend: Backend) {
    let world = world(backend).await;
    let app = &world.app;
    register_dryer(app).await;
    let (payment_a, session_a) = checkout_without_locked_offer(app).await;
    set_washer_plans(app, json!([{"plan_id": "p60", "name": "60 minutes", "minutes": 60, "price": 500, "currency": "eur"}])).await;
    world.sims.stripe.pay(&session_a, CARD).unwrap();
    assert!(
        wait_for(|| async { !parked(app).await.is_empty() }).await,
        "A's failing reaction is parked"
    );
    let rows = parked(app).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row["subscriber"], "workflow:device_sessions");
    assert_eq!(row["status"], "parked");
    assert_eq!(row["aggregate_id"], "washer");
    assert_eq!(row["event_type"], "DeviceReserved");
    assert!(
        row["error"]
            .as_str()
            .unwrap()
            .contains("no longer has plan p30"),
        "{row}"
    );
    let parked_id = row["parked_id"].as_str().unwrap().to_string();

    // Another guest on another device is served while A's reaction is parked.
    let payment_b = pay_dryer(&world).await;
    assert!(
        wait_for(|| async { state_on(app, payment_b).await == Some(SessionState::Active) }).await,
        "B's session starts"
    );
    assert!(
        world.sims.shelly.relay(DUAL, 0).unwrap().output,
        "B's relay is ON"
    );
    assert_eq!(state_on(app, payment_a).await, None, "A has no session yet");

    // Health and the dashboard show it, with retry and skip for operators.
    let health: Value = app
        .get_with_token("/api/health/modules", ADMIN_TOKEN)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(health["parked_reactions"]["total"], 1, "{health}");
    assert_eq!(
        health["parked_reactions"]["by_subscriber"][0]["subscriber"],
        "workflow:device_sessions"
    );
    let operator = login(&app.database, Role::Operator).await;
    let (status, body) = page(app, "/dashboard/parked", &operator).await;
    assert_eq!(status, 200);
    assert!(body.contains("no longer has plan p30"), "{body}");
    assert!(body.contains(&format!("/dashboard/parked/{parked_id}/retry")));
    assert!(body.contains(&format!("/dashboard/parked/{parked_id}/skip")));
    let auditor = login(&app.database, Role::Auditor).await;
    let (status, body) = page(app, "/dashboard/parked", &auditor).await;
    assert_eq!(status, 200);
    assert!(!body.contains("/retry"), "auditors see no buttons");

    // A retry before the cause is fixed parks it again, with one more attempt.
    let retry = app
        .post_json(
            &format!("/api/parked-reactions/{parked_id}/retry"),
            Some(ADMIN_TOKEN),
            &json!({"note": "trying"}),
        )
        .await;
    assert_eq!(retry.status(), 202);
    assert!(
        wait_for(|| async {
            let rows = parked(app).await;
            rows[0]["status"] == "parked" && rows[0]["attempts"] == 2
        })
        .await,
        "the retry failed and parked it again: {:?}",
        parked(app).await
    );

    // The operator restores the plan and retries from the dashboard: A is served.
    set_washer_plans(app, json!([{"plan_id": "p30", "name": "30 minutes", "minutes": 30, "price": 300, "currency": "eur"}])).await;
    let response = post_form(
        app,
        &format!("/dashboard/parked/{parked_id}/retry"),
        &operator,
        &[],
    )
    .await;
    assert_eq!(response.status(), 303);
    assert!(
        wait_for(|| async { state_on(app, payment_a).await == Some(SessionState::Active) }).await,
        "A's session starts after the retry"
    );
    assert!(
        world.sims.shelly.relay(PLUG, 0).unwrap().output,
        "A's relay is ON"
    );
    let rows = parked(app).await;
    assert_eq!(rows[0]["status"], "resolved");
    assert!(
        rows[0]["acted_by"].as_str().unwrap().starts_with("user:"),
        "{rows:?}"
    );
    let health: Value = app
        .get_with_token("/api/health/modules", ADMIN_TOKEN)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(health["parked_reactions"]["total"], 0);
    world.app.stop().await;
}

on_both_backends!(a_reaction_that_fails_for_one_payment_is_parked_and_others_keep_flowing);

/// Skip needs the operate role and a CSRF token on the dashboard; a skipped row cannot be
/// retried, and the API answers 404 for an unknown row.
async fn skipping_a_parked_reaction_is_an_operator_decision(backend: Backend) {
    let world = world(backend).await;
    let app = &world.app;
    let (_, session_a) = checkout_without_locked_offer(app).await;
    set_washer_plans(app, json!([{"plan_id": "p60", "name": "60 minutes", "minutes": 60, "price": 500, "currency": "eur"}])).await;
    world.sims.stripe.pay(&session_a, CARD).unwrap();
    assert!(wait_for(|| async { !parked(app).await.is_empty() }).await);
    let parked_id = parked(app).await[0]["parked_id"]
        .as_str()
        .unwrap()
        .to_string();

    let auditor = app.token(Role::Auditor).await;
    let refused = app
        .post_json(
            &format!("/api/parked-reactions/{parked_id}/skip"),
            Some(&auditor),
            &json!({}),
        )
        .await;
    assert_eq!(refused.status(), 403);
    let operator = login(&app.database, Role::Operator).await;
    let forged = app
        .client
        .post(format!("{}/dashboard/parked/{parked_id}/skip", app.address))
        .header("cookie", &operator.cookie)
        .form(&[("note", "no csrf")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        forged.status(),
        403,
        "a form without its CSRF token is refused"
    );
    assert_eq!(parked(app).await[0]["status"], "parked");

    let skipped = post_form(
        app,
        &format!("/dashboard/parked/{parked_id}/skip"),
        &operator,
        &[("note", "guest refunded by hand")],
    )
    .await;
    assert_eq!(skipped.status(), 303);
    let row = parked(app).await[0].clone();
    assert_eq!(row["status"], "skipped");
    assert_eq!(row["note"], "guest refunded by hand");
    let again = app
        .post_json(
            &format!("/api/parked-reactions/{parked_id}/retry"),
            Some(ADMIN_TOKEN),
            &json!({}),
        )
        .await;
    assert_eq!(again.status(), 409);
    let unknown = app
        .post_json(
            "/api/parked-reactions/nope/retry",
            Some(ADMIN_TOKEN),
            &json!({}),
        )
        .await;
    assert_eq!(unknown.status(), 404);
    world.app.stop().await;
}

on_both_backends!(skipping_a_parked_reaction_is_an_operator_decision);
