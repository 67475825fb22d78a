//! JSON routes added for the operator dashboard: retrying a webhook delivery, the audit
//! log's actor filter, and the dashboard's read queries over the bench data generator.

use latchkey::http::auth::{create_token, Role};
use serde_json::Value;

use crate::helpers::{spawn_app, Backend, TestDatabase, ADMIN_TOKEN};
use crate::on_both_backends;
use crate::stripe_support::*;

async fn retry(app: &StripeApp, event_id: &str, token: &str) -> reqwest::Response {
    app.client
        .post(format!(
            "{}/api/stripe/deliveries/{event_id}/retry",
            app.address
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn a_failed_delivery_out_of_attempts_is_processed_again_on_retry(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    // Fails twice, which is every attempt the worker has; succeeds from the third call on.
    let processor = CountingProcessor::failing_first(2);
    let mut worker = fast_worker();
    worker.max_attempts = 2;
    let setup = Setup {
        processor: Some(processor.clone()),
        worker,
        ..Setup::default()
    };
    let app = spawn_stripe_app(&database, setup).await;
    let id = unique_event_id();
    app.post_signed(&event(&id, "payment_intent.succeeded"))
        .await;
    wait_for("two failed attempts", || async {
        app.delivery(&id).await.is_some_and(|d| d["attempts"] == 2)
    })
    .await;
    assert_eq!(app.delivery(&id).await.unwrap()["status"], "failed");

    let auditor = create_token(app.stripe.inbox.database(), Role::Auditor, "audit")
        .await
        .unwrap();
    let refused = retry(&app, &id, &auditor).await;
    assert_eq!(refused.status(), 403, "auditors change nothing");
    assert_eq!(processor.calls_for(&id), 2);

    let response = retry(&app, &id, TOKEN).await;
    assert_eq!(response.status(), 202);
    let row: Value = response.json().await.unwrap();
    assert_eq!(row["event_id"], id.as_str());
    assert_eq!(row["status"], "processed");
    assert_eq!(row["attempts"], 3);
    assert_eq!(processor.calls_for(&id), 3);

    let again = retry(&app, &id, TOKEN).await;
    assert_eq!(again.status(), 409, "a processed delivery is not retried");
    let body: Value = again.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("processed"));
    assert_eq!(retry(&app, "evt_unknown", TOKEN).await.status(), 404);
    app.stop().await;
}

async fn the_audit_log_filters_by_actor(backend: Backend) {
    let app = spawn_app(backend).await;
    let operator = app.token(Role::Operator).await;
    for (uid, token) in [("101", ADMIN_TOKEN), ("102", operator.as_str())] {
        let door = serde_json::json!({"uid": uid, "name": "Door", "location": "Paris",
            "time_zone": "Europe/Paris", "price": 500, "currency": "eur", "access_minutes": 60});
        assert_eq!(
            app.post_json("/api/doors", Some(token), &door)
                .await
                .status(),
            201
        );
    }
    let mut entries = Vec::new();
    for _ in 0..400 {
        let response = app
            .client
            .get(format!(
                "{}/api/audit?actor=operator:bootstrap",
                app.address
            ))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        entries = body["items"].as_array().unwrap().clone();
        if !entries.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        entries.len(),
        1,
        "only the bootstrap admin's door: {entries:?}"
    );
    assert_eq!(entries[0]["aggregate_id"], "101");
    assert_eq!(entries[0]["actor"], "operator:bootstrap");
    app.stop().await;
}

on_both_backends!(
    a_failed_delivery_out_of_attempts_is_processed_again_on_retry,
    the_audit_log_filters_by_actor,
);
