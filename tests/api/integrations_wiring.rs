//! The TTLock and Shelly clients wired into the app through the domain's ports, against
//! the simulators, and their health at `/api/health/modules`.

use chrono::Utc;
use latchkey::config::Settings;
use latchkey::cqrs::CommandMetadata;
use latchkey::sim::shelly::{ShellySimConfig, ShellySimHandle};
use latchkey::sim::ttlock::{TtlockSimConfig, TtlockSimHandle};
use latchkey::startup::BuildOptions;
use latchkey_aggregates::door::{AccessCodeState, DoorCommand};
use latchkey_aggregates::Actor;
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::helpers::{spawn_app_with_settings, Backend, TestApp, TestDatabase, ADMIN_TOKEN};
use crate::on_both_backends;
use crate::sim_helpers::{GATEWAY_LOCK, PLUG};

async fn simulators() -> (TtlockSimHandle, ShellySimHandle) {
    let ttlock = latchkey::sim::ttlock::spawn(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        TtlockSimConfig::default(),
    )
    .unwrap();
    let shelly = latchkey::sim::shelly::spawn(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        ShellySimConfig::default(),
    )
    .unwrap();
    (ttlock, shelly)
}

fn point_at(
    settings: &mut Settings,
    ttlock: &TtlockSimHandle,
    shelly: &ShellySimHandle,
    ttlock_secret: Option<&str>,
) {
    let config = TtlockSimConfig::default();
    settings.ttlock.api_base = Some(ttlock.base_url().clone());
    settings.ttlock.client_id = Some(config.client_id.clone());
    settings.ttlock.client_secret = Some(ttlock_secret.map_or(config.client_secret.clone(), |s| {
        SecretString::from(s.to_string())
    }));
    settings.ttlock.username = Some(config.username.clone());
    settings.ttlock.password = Some(config.password.clone());
    let cloud = shelly.cloud_config();
    settings.shelly.server = Some(cloud.server.clone());
    settings.shelly.auth_key = Some(cloud.auth_key.clone());
}

async fn app_on_simulators(
    backend: Backend,
    ttlock_secret: Option<&str>,
) -> (TestApp, TtlockSimHandle, ShellySimHandle) {
    let (ttlock, shelly) = simulators().await;
    let app = spawn_app_with_settings(
        TestDatabase::create(backend).await,
        BuildOptions::default(),
        |settings| point_at(settings, &ttlock, &shelly, ttlock_secret),
    )
    .await;
    let door = json!({"uid": GATEWAY_LOCK.to_string(), "name": "Room 12", "location": "Lyon", "time_zone": "Europe/Paris",
                      "price": 1500, "currency": "eur", "access_minutes": 60});
    assert_eq!(
        app.post_json("/api/doors", Some(ADMIN_TOKEN), &door)
            .await
            .status(),
        201
    );
    (app, ttlock, shelly)
}

async fn a_door_code_issued_through_ttlock_opens_the_lock_until_revoked(backend: Backend) {
    let (app, ttlock, _shelly) = app_on_simulators(backend, None).await;
    let door_uid = GATEWAY_LOCK.to_string();
    let payment_id = Uuid::new_v4();
    let metadata = CommandMetadata::new("system", "test");
    let issue = DoorCommand::IssueAccessCode {
        payment_id,
        actor: Actor::System,
        at: Utc::now(),
        locked_minutes: None,
    };
    app.state
        .buses
        .doors
        .execute(&door_uid, issue, metadata.clone())
        .await
        .unwrap();
    let (door, _) = app.state.buses.doors.load(&door_uid).await.unwrap();
    let code = door.access_code(payment_id).unwrap().clone();
    assert_eq!(code.state, AccessCodeState::Issued);
    let digits = code.code.clone().unwrap();
    assert!(
        ttlock
            .enter_passcode(GATEWAY_LOCK, &digits, Utc::now())
            .unwrap()
            .opens
    );

    let revoke = DoorCommand::RevokeAccessCode {
        payment_id,
        reason: "refunded".into(),
        actor: Actor::Stripe,
        at: Utc::now(),
    };
    app.state
        .buses
        .doors
        .execute(&door_uid, revoke, metadata)
        .await
        .unwrap();
    let (door, _) = app.state.buses.doors.load(&door_uid).await.unwrap();
    assert_eq!(
        door.access_code(payment_id).unwrap().state,
        AccessCodeState::Revoked
    );
    assert!(
        !ttlock
            .enter_passcode(GATEWAY_LOCK, &digits, Utc::now())
            .unwrap()
            .opens
    );
    app.stop().await;
}

async fn an_operator_switches_a_cloud_relay_with_a_safety_timer(backend: Backend) {
    let (app, _ttlock, shelly) = app_on_simulators(backend, None).await;
    let device = json!({"uid": "washer", "name": "Washer", "location": "Lyon", "time_zone": "Europe/Paris",
                        "shelly_device_id": PLUG, "shelly_channel": 0,
                        "plans": [{"plan_id": "p", "name": "30 min", "minutes": 30, "price": 300, "currency": "eur"}]});
    assert_eq!(
        app.post_json("/api/devices", Some(ADMIN_TOKEN), &device)
            .await
            .status(),
        201
    );
    let response = app
        .post_json(
            "/api/devices/washer/relay",
            Some(ADMIN_TOKEN),
            &json!({"on": true}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["relay_on"], true);
    let relay = shelly.relay(PLUG, 0).unwrap();
    assert!(relay.output);
    let timer = serde_json::to_value(&relay).unwrap();
    // Switched on by hand, it still turns itself off after four hours if nobody does.
    assert_eq!(timer["timer_duration_ms"], 4 * 60 * 60 * 1000, "{timer}");
    let off = app
        .post_json(
            "/api/devices/washer/relay",
            Some(ADMIN_TOKEN),
            &json!({"on": false}),
        )
        .await;
    assert_eq!(off.status(), 200);
    assert!(!shelly.relay(PLUG, 0).unwrap().output);
    app.stop().await;
}

async fn module_health_shows_a_failing_integration_with_its_error(backend: Backend) {
    let (app, _ttlock, _shelly) = app_on_simulators(backend, Some("wrong-secret")).await;
    let payment_id = Uuid::new_v4();
    let issue = DoorCommand::IssueAccessCode {
        payment_id,
        actor: Actor::System,
        at: Utc::now(),
        locked_minutes: None,
    };
    let _ = app
        .state
        .buses
        .doors
        .execute(
            &GATEWAY_LOCK.to_string(),
            issue,
            CommandMetadata::new("system", "test"),
        )
        .await;
    let response = app
        .client
        .get(format!("{}/api/health/modules", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let module = |name: &str| {
        body["modules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(module("ttlock")["state"], "failing");
    assert!(module("ttlock")["last_error"]
        .as_str()
        .unwrap()
        .contains("TTLOCK_CLIENT_SECRET"));
    assert!(module("ttlock")["last_error_at"].is_string());
    assert_eq!(module("shelly")["state"], "ok");
    assert_eq!(module("stripe")["state"], "not_configured");
    let projections = body["projections"].as_array().unwrap();
    assert_eq!(projections.len(), 5, "{body}");
    assert!(projections
        .iter()
        .all(|p| p["lag_events"].is_i64() && p["position"].is_i64()));
    let anonymous = app.get("/api/health/modules").await;
    assert_eq!(anonymous.status(), 401);
    app.stop().await;
}

on_both_backends!(
    a_door_code_issued_through_ttlock_opens_the_lock_until_revoked,
    an_operator_switches_a_cloud_relay_with_a_safety_timer,
    module_health_shows_a_failing_integration_with_its_error,
);
