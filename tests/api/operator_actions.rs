//! Refund, force-end and door sync: roles, refusals, and the effect.

use latchkey::http::auth::Role;
use latchkey::payments::stripe_facts::apply;
use latchkey::store::journal::Journal;
use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::checkout::app_with_fake_stripe;
use crate::helpers::{
    eventually, spawn_app, spawn_app_with_settings, Backend, TestDatabase, ADMIN_TOKEN,
};
use crate::on_both_backends;

async fn only_admins_refund_and_the_refund_is_requested_from_stripe(backend: Backend) {
    let (app, _) = app_with_fake_stripe(backend).await;
    let response = app
        .post_json(
            "/api/checkout/door/77",
            None,
            &json!({"email": "guest@example.com"}),
        )
        .await;
    let body: Value = response.json().await.unwrap();
    let payment_id: Uuid = body["payment_id"].as_str().unwrap().parse().unwrap();
    let success = json!({"id": "evt_s", "type": "payment_intent.succeeded", "created": 1, "data": {"object": {
        "id": format!("pi_test_{}", payment_id.simple()), "amount_received": 1500, "currency": "eur",
        "metadata": {"latchkey_payment_id": payment_id.to_string()}}}});
    apply(&app.state.buses, &app.database, &success)
        .await
        .unwrap();

    let path = format!("/api/payments/{payment_id}/refund");
    let body = json!({"amount": 500, "reason": "late check-in"});
    assert_eq!(app.post_json(&path, None, &body).await.status(), 401);
    for role in [Role::Auditor, Role::Operator] {
        let token = app.token(role).await;
        assert_eq!(
            app.post_json(&path, Some(&token), &body).await.status(),
            403,
            "{role:?}"
        );
    }
    let accepted = app.post_json(&path, Some(ADMIN_TOKEN), &body).await;
    assert_eq!(accepted.status(), 202);
    let events = Journal::new(app.database.clone())
        .aggregate_events("Payment", &payment_id.to_string(), None)
        .await
        .unwrap();
    let requested = events
        .iter()
        .find(|e| e.event_type == "RefundOrdered")
        .expect("the decision is journalled before Stripe is asked");
    assert_eq!(requested.payload["amount"]["amount_minor"], 500);
    assert_eq!(requested.payload["actor"]["id"], "bootstrap");
    assert_eq!(requested.payload["reason"], "late check-in");
    let journal = Journal::new(app.database.clone());
    assert!(
        eventually(400, Duration::from_millis(50), || async {
            journal
                .aggregate_events("Payment", &payment_id.to_string(), None)
                .await
                .unwrap()
                .iter()
                .any(|e| e.event_type == "RefundSubmitted")
        })
        .await,
        "the refund job asks Stripe and records its answer"
    );

    let too_much = app
        .post_json(&path, Some(ADMIN_TOKEN), &json!({"amount": 5000}))
        .await;
    assert_eq!(too_much.status(), 409);
    let unknown = app
        .post_json(
            &format!("/api/payments/{}/refund", Uuid::new_v4()),
            Some(ADMIN_TOKEN),
            &json!({}),
        )
        .await;
    assert_eq!(unknown.status(), 404);
    let garbage = app
        .post_json(
            "/api/payments/not-a-uuid/refund",
            Some(ADMIN_TOKEN),
            &json!({}),
        )
        .await;
    assert_eq!(garbage.status(), 404);
    app.stop().await;
}

async fn force_end_needs_an_operator_and_a_reason(backend: Backend) {
    let app = spawn_app(backend).await;
    let auditor_token = app.token(Role::Auditor).await;
    let catch_up = app
        .post_json("/api/stripe/catch-up", Some(&auditor_token), &json!({}))
        .await;
    assert_eq!(
        catch_up.status(),
        403,
        "auditors change nothing, not even the inbox"
    );
    assert_eq!(
        app.post_json("/api/stripe/catch-up", None, &json!({}))
            .await
            .status(),
        401
    );
    let path = format!("/api/sessions/{}/force-end", Uuid::new_v4());
    assert_eq!(
        app.post_json(&path, None, &json!({"reason": "x"}))
            .await
            .status(),
        401
    );
    let auditor = app.token(Role::Auditor).await;
    assert_eq!(
        app.post_json(&path, Some(&auditor), &json!({"reason": "x"}))
            .await
            .status(),
        403
    );
    let operator = app.token(Role::Operator).await;
    assert_eq!(
        app.post_json(&path, Some(&operator), &json!({"reason": " "}))
            .await
            .status(),
        422
    );
    assert_eq!(
        app.post_json(&path, Some(&operator), &json!({}))
            .await
            .status(),
        422
    );
    assert_eq!(
        app.post_json(&path, Some(&operator), &json!({"reason": "stuck"}))
            .await
            .status(),
        404
    );
    app.stop().await;
}

async fn door_sync_lists_ttlock_locks_and_which_are_doors(backend: Backend) {
    let app = spawn_app(backend).await;
    let not_configured = app
        .post_json("/api/doors/sync", Some(ADMIN_TOKEN), &json!({}))
        .await;
    assert_eq!(not_configured.status(), 503);
    app.stop().await;

    let ttlock = latchkey::sim::ttlock::spawn(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        latchkey::sim::ttlock::TtlockSimConfig::default(),
    )
    .unwrap();
    let app = spawn_app_with_settings(
        TestDatabase::create(backend).await,
        Default::default(),
        |settings| {
            crate::sim_helpers::use_ttlock_sim(settings, &ttlock);
        },
    )
    .await;
    let door = json!({"uid": "4410021", "name": "Room 12", "location": "Lyon", "time_zone": "Europe/Paris",
                      "price": 1500, "currency": "eur", "access_minutes": 60});
    app.post_json("/api/doors", Some(ADMIN_TOKEN), &door).await;
    let auditor = app.token(Role::Auditor).await;
    assert_eq!(
        app.post_json("/api/doors/sync", Some(&auditor), &json!({}))
            .await
            .status(),
        403
    );
    let response = app
        .post_json("/api/doors/sync", Some(ADMIN_TOKEN), &json!({}))
        .await;
    assert_eq!(response.status(), 200);
    let locks: Value = response.json().await.unwrap();
    let lock = |id: i64| {
        locks
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["lock_id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(lock(4_410_021)["registered"], true);
    assert_eq!(lock(4_410_022)["registered"], false);
    assert_eq!(lock(4_410_021)["has_gateway"], true);
    app.stop().await;
}

/// Retry, reissue and release need an operator; release needs a reason; a code action on
/// an unpaid payment, or a release with nothing held, is refused with 409.
async fn code_actions_and_release_need_an_operator_and_a_fitting_payment(backend: Backend) {
    let (app, _) = app_with_fake_stripe(backend).await;
    let response = app
        .post_json(
            "/api/checkout/door/77",
            None,
            &json!({"email": "guest@example.com"}),
        )
        .await;
    let body: Value = response.json().await.unwrap();
    let payment_id = body["payment_id"].as_str().unwrap().to_string();
    let auditor = app.token(Role::Auditor).await;
    let operator = app.token(Role::Operator).await;
    for action in ["retry-code", "reissue-code", "release-hold"] {
        let path = format!("/api/payments/{payment_id}/{action}");
        let body = json!({"reason": "guest called"});
        assert_eq!(
            app.post_json(&path, None, &body).await.status(),
            401,
            "{action}"
        );
        assert_eq!(
            app.post_json(&path, Some(&auditor), &body).await.status(),
            403,
            "{action}"
        );
    }
    for action in ["retry-code", "reissue-code"] {
        let path = format!("/api/payments/{payment_id}/{action}");
        let refused = app.post_json(&path, Some(&operator), &json!({})).await;
        assert_eq!(
            refused.status(),
            409,
            "{action}: the payment is not paid yet"
        );
        let unknown = format!("/api/payments/{}/{action}", Uuid::new_v4());
        assert_eq!(
            app.post_json(&unknown, Some(&operator), &json!({}))
                .await
                .status(),
            404
        );
    }
    let release = format!("/api/payments/{payment_id}/release-hold");
    assert_eq!(
        app.post_json(&release, Some(&operator), &json!({"reason": " "}))
            .await
            .status(),
        422
    );
    assert_eq!(
        app.post_json(&release, Some(&operator), &json!({"reason": "stuck"}))
            .await
            .status(),
        409,
        "nothing is held"
    );
    app.stop().await;
}

on_both_backends!(
    code_actions_and_release_need_an_operator_and_a_fitting_payment,
    only_admins_refund_and_the_refund_is_requested_from_stripe,
    force_end_needs_an_operator_and_a_reason,
    door_sync_lists_ttlock_locks_and_which_are_doors,
);

#[tokio::test]
async fn the_openapi_document_lists_the_write_routes() {
    let app = spawn_app(Backend::Sqlite).await;
    let document: Value = app.get("/api/openapi.json").await.json().await.unwrap();
    for (path, method) in [
        ("/api/payments/{id}/refund", "post"),
        ("/api/sessions/{id}/force-end", "post"),
        ("/api/payments/{id}/retry-code", "post"),
        ("/api/payments/{id}/reissue-code", "post"),
        ("/api/payments/{id}/release-hold", "post"),
        ("/api/doors/sync", "post"),
        ("/api/doors", "post"),
        ("/api/doors/{uid}", "patch"),
        ("/api/devices", "post"),
        ("/api/devices/{uid}", "patch"),
        ("/api/devices/{uid}/relay", "post"),
        ("/api/checkout/door/{door_uid}", "post"),
        ("/api/checkout/device/{device_uid}", "post"),
        ("/api/stripe/webhook", "post"),
        ("/api/stripe/deliveries", "get"),
        ("/api/stripe/diagnostics", "get"),
        ("/api/health/modules", "get"),
    ] {
        assert!(
            document["paths"][path][method].is_object(),
            "{method} {path} is missing"
        );
    }
    app.stop().await;
}
