//! Operators register and change doors and devices; roles are enforced.

use latchkey::http::auth::Role;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Backend, ADMIN_TOKEN};
use crate::on_both_backends;

fn door() -> Value {
    json!({"uid": "4410021", "name": "Room 12", "location": "Lyon", "time_zone": "Europe/Paris",
           "price": 1500, "currency": "eur", "access_minutes": 120})
}

fn device() -> Value {
    json!({"uid": "washer-1", "name": "Washer 1", "location": "Lyon", "time_zone": "Europe/Paris",
           "shelly_device_id": "shellyplus1-a1", "shelly_channel": 0,
           "plans": [{"plan_id": "short", "name": "30 minutes", "minutes": 30, "price": 300, "currency": "eur"},
                     {"plan_id": "long", "name": "60 minutes", "minutes": 60, "price": 500, "currency": "eur"}]})
}

async fn an_operator_registers_and_changes_a_door(backend: Backend) {
    let app = spawn_app(backend).await;
    let operator = app.token(Role::Operator).await;
    let created = app.post_json("/api/doors", Some(&operator), &door()).await;
    assert_eq!(created.status(), 201);
    let body: Value = created.json().await.unwrap();
    assert_eq!(body["lock_id"], 4410021);
    assert_eq!(body["price"], 1500);
    assert_eq!(body["status"], "active");

    let changed = app
        .patch_json(
            "/api/doors/4410021",
            Some(&operator),
            &json!({"price": 1800, "status": "maintenance", "reason": "broken handle"}),
        )
        .await;
    assert_eq!(changed.status(), 200);
    let body: Value = changed.json().await.unwrap();
    assert_eq!(body["price"], 1800);
    assert_eq!(body["currency"], "eur");
    assert_eq!(body["status"], "maintenance");

    let again = app.post_json("/api/doors", Some(&operator), &door()).await;
    assert_eq!(again.status(), 409, "a door is registered once");
    let unknown = app
        .patch_json("/api/doors/999", Some(&operator), &json!({"name": "x"}))
        .await;
    assert_eq!(unknown.status(), 404);
    app.stop().await;
}

async fn door_input_is_validated_with_messages(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut bad_zone = door();
    bad_zone["time_zone"] = json!("Mars/Olympus");
    let response = app
        .post_json("/api/doors", Some(ADMIN_TOKEN), &bad_zone)
        .await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("time_zone"));

    let mut bad_uid = door();
    bad_uid["uid"] = json!("front-door");
    assert_eq!(
        app.post_json("/api/doors", Some(ADMIN_TOKEN), &bad_uid)
            .await
            .status(),
        422
    );
    let mut bad_currency = door();
    bad_currency["currency"] = json!("EURO");
    assert_eq!(
        app.post_json("/api/doors", Some(ADMIN_TOKEN), &bad_currency)
            .await
            .status(),
        422
    );
    let missing = app
        .post_json("/api/doors", Some(ADMIN_TOKEN), &json!({"uid": "1"}))
        .await;
    assert_eq!(missing.status(), 422);
    let not_json = app
        .client
        .post(format!("{}/api/doors", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    app.stop().await;
}

async fn roles_guard_the_write_routes(backend: Backend) {
    let app = spawn_app(backend).await;
    let auditor = app.token(Role::Auditor).await;
    for (path, body) in [("/api/doors", door()), ("/api/devices", device())] {
        let anonymous = app.post_json(path, None, &body).await;
        assert_eq!(anonymous.status(), 401, "{path}");
        let forged = app.post_json(path, Some("not-a-token"), &body).await;
        assert_eq!(forged.status(), 401, "{path}");
        let read_only = app.post_json(path, Some(&auditor), &body).await;
        assert_eq!(read_only.status(), 403, "{path}");
        let error: Value = read_only.json().await.unwrap();
        assert_eq!(error["error"]["code"], "forbidden");
    }
    assert_eq!(
        app.post_json("/api/devices", Some(ADMIN_TOKEN), &device())
            .await
            .status(),
        201
    );
    for (path, body) in [
        ("/api/devices/washer-1", json!({"name": "x"})),
        ("/api/doors/4410021", json!({"name": "x"})),
    ] {
        assert_eq!(
            app.patch_json(path, Some(&auditor), &body).await.status(),
            403,
            "{path}"
        );
    }
    let relay = app
        .post_json(
            "/api/devices/washer-1/relay",
            Some(&auditor),
            &json!({"on": true}),
        )
        .await;
    assert_eq!(relay.status(), 403);
    app.stop().await;
}

async fn an_operator_registers_a_device_and_changes_its_plans(backend: Backend) {
    let app = spawn_app(backend).await;
    let created = app
        .post_json("/api/devices", Some(ADMIN_TOKEN), &device())
        .await;
    assert_eq!(created.status(), 201);
    let body: Value = created.json().await.unwrap();
    assert_eq!(body["plans"].as_array().unwrap().len(), 2);
    assert_eq!(body["shelly_device_id"], "shellyplus1-a1");
    let changed = app
        .patch_json(
            "/api/devices/washer-1",
            Some(ADMIN_TOKEN),
            &json!({"plans": [{"plan_id": "short", "name": "20 minutes", "minutes": 20, "price": 250, "currency": "eur"}],
                    "status": "maintenance"}),
        )
        .await;
    assert_eq!(changed.status(), 200);
    let body: Value = changed.json().await.unwrap();
    assert_eq!(body["plans"][0]["minutes"], 20);
    assert_eq!(body["status"], "maintenance");
    // No Shelly configured: switching the relay says what to set.
    let relay = app
        .post_json(
            "/api/devices/washer-1/relay",
            Some(ADMIN_TOKEN),
            &json!({"on": true}),
        )
        .await;
    let status = relay.status();
    let error: Value = relay.json().await.unwrap();
    assert_eq!(status, 503, "{error}");
    assert_eq!(error["error"]["code"], "not_configured");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("SHELLY_AUTH_KEY"),
        "{error}"
    );
    app.stop().await;
}

on_both_backends!(
    an_operator_registers_and_changes_a_door,
    door_input_is_validated_with_messages,
    roles_guard_the_write_routes,
    an_operator_registers_a_device_and_changes_its_plans,
);
