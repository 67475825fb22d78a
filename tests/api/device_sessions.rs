//! Device sessions end to end: Stripe (manual capture) → the device is reserved → the
//! reconciler switches the Shelly relay ON → the payment is captured → at the end the relay
//! goes OFF and the session completes; a relay that never comes ON means no charge.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use latchkey::reconciler::Clock;
use latchkey::sim::shelly::{ShellySimConfig, ShellySimHandle};
use latchkey::sim::stripe::{StripeSimConfig, StripeSimHandle};
use latchkey::startup::BuildOptions;
use latchkey_aggregates::payment::PaymentStatus;
use latchkey_aggregates::session::SessionState;
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::helpers::{spawn_app_with_settings, Backend, TestApp, TestDatabase, ADMIN_TOKEN};
use crate::on_both_backends;
use crate::sim_helpers::PLUG;
use crate::stripe_support::{API_KEY, SECRET};

/// The wall clock plus an offset the test moves forward. (The world of these tests is
/// shared with the dashboard's force-end test.)
#[derive(Default)]
pub(crate) struct TestClock(Mutex<chrono::Duration>);

impl TestClock {
    fn advance(&self, by: chrono::Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + *self.0.lock().unwrap()
    }
}

pub(crate) struct World {
    pub(crate) app: TestApp,
    pub(crate) stripe: StripeSimHandle,
    pub(crate) shelly: ShellySimHandle,
    pub(crate) clock: Arc<TestClock>,
}

pub(crate) async fn world(backend: Backend) -> World {
    let stripe = latchkey::sim::stripe::spawn(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        StripeSimConfig::new(API_KEY, vec![SECRET.to_string()]),
    )
    .unwrap();
    let shelly = latchkey::sim::shelly::spawn(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        ShellySimConfig::default(),
    )
    .unwrap();
    let clock = Arc::new(TestClock::default());
    let mut options = BuildOptions::default();
    options.workflows.clock = Some(clock.clone());
    options.workflows.session_grace_seconds = 60;
    options.workflows.reconciler.interval = Duration::from_millis(50);
    options.workflows.reconciler.retry_base = Duration::from_millis(50);
    options.workflows.reconciler.sweep_interval = Duration::from_millis(200);
    let stripe_base = stripe.url();
    let cloud = shelly.cloud_config();
    let app = spawn_app_with_settings(TestDatabase::create(backend).await, options, |settings| {
        settings.stripe.secret_key = Some(SecretString::from(API_KEY.to_string()));
        settings.stripe.api_base = Some(stripe_base.parse().unwrap());
        settings.stripe.webhook_secrets = vec![SecretString::from(SECRET.to_string())];
        settings.shelly.server = Some(cloud.server.clone());
        settings.shelly.auth_key = Some(cloud.auth_key.clone());
    })
    .await;
    stripe.set_webhook_url(format!("{}/api/stripe/webhook", app.address));
    let device = json!({"uid": "washer", "name": "Washer", "location": "Lyon", "time_zone": "Europe/Paris",
                        "shelly_device_id": PLUG, "shelly_channel": 0,
                        "plans": [{"plan_id": "p30", "name": "30 minutes", "minutes": 30, "price": 300, "currency": "eur"}]});
    assert_eq!(
        app.post_json("/api/devices", Some(ADMIN_TOKEN), &device)
            .await
            .status(),
        201
    );
    World {
        app,
        stripe,
        shelly,
        clock,
    }
}

pub(crate) async fn pay(world: &World) -> Uuid {
    let response = world
        .app
        .post_json(
            "/api/checkout/device/washer",
            None,
            &json!({"plan_id": "p30", "email": "guest@example.com"}),
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
        .stripe
        .pay(payment.checkout_session_id().unwrap(), "4242424242424242")
        .unwrap();
    payment_id
}

pub(crate) async fn wait_for<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..300 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

pub(crate) async fn session_state(world: &World, session_id: Uuid) -> Option<SessionState> {
    world
        .app
        .state
        .buses
        .sessions
        .load(&session_id.to_string())
        .await
        .unwrap()
        .0
        .state()
}

async fn payment_status(world: &World, payment_id: Uuid) -> PaymentStatus {
    world
        .app
        .state
        .buses
        .payments
        .load(&payment_id.to_string())
        .await
        .unwrap()
        .0
        .status()
}

async fn device_is_free(world: &World) -> bool {
    world
        .app
        .state
        .buses
        .devices
        .load("washer")
        .await
        .unwrap()
        .0
        .holder_session()
        .is_none()
}

async fn a_paid_session_switches_on_is_captured_and_switches_off_at_its_end(backend: Backend) {
    let world = world(backend).await;
    let payment_id = pay(&world).await;
    // The session id is the payment id: one session per payment.
    assert!(
        wait_for(|| async {
            session_state(&world, payment_id).await == Some(SessionState::Active)
        })
        .await,
        "the session starts"
    );
    assert!(
        world.shelly.relay(PLUG, 0).unwrap().output,
        "the relay is ON"
    );
    assert!(
        wait_for(|| async { payment_status(&world, payment_id).await == PaymentStatus::Succeeded })
            .await,
        "captured once ON"
    );

    world.clock.advance(chrono::Duration::minutes(31));
    assert!(
        wait_for(|| async {
            session_state(&world, payment_id).await == Some(SessionState::Completed)
        })
        .await,
        "the session completes"
    );
    let relay = world.shelly.relay(PLUG, 0).unwrap();
    assert!(!relay.output, "the relay is OFF at the end");
    let log = serde_json::to_value(&relay).unwrap()["log"].clone();
    let switches: Vec<bool> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["on"].as_bool().unwrap())
        .collect();
    assert_eq!(switches, vec![true, false], "{log}");
    assert!(
        wait_for(|| async { device_is_free(&world).await }).await,
        "the device is free again"
    );
    world.app.stop().await;
}

async fn a_relay_that_never_comes_on_costs_the_guest_nothing(backend: Backend) {
    let world = world(backend).await;
    world.shelly.set_online(PLUG, false).unwrap();
    let payment_id = pay(&world).await;
    assert!(
        wait_for(|| async {
            session_state(&world, payment_id).await == Some(SessionState::Opened)
        })
        .await
    );
    assert_eq!(
        payment_status(&world, payment_id).await,
        PaymentStatus::Authorized
    );
    world.clock.advance(chrono::Duration::minutes(2));
    assert!(
        wait_for(|| async {
            session_state(&world, payment_id).await == Some(SessionState::Cancelled)
        })
        .await,
        "cancelled after the grace period"
    );
    assert!(
        wait_for(|| async { payment_status(&world, payment_id).await == PaymentStatus::Cancelled })
            .await,
        "the authorization is released, never captured"
    );
    assert!(
        wait_for(|| async { device_is_free(&world).await }).await,
        "the device is free again"
    );
    world.app.stop().await;
}

on_both_backends!(
    a_paid_session_switches_on_is_captured_and_switches_off_at_its_end,
    a_relay_that_never_comes_on_costs_the_guest_nothing,
);

async fn a_second_guest_waits_for_the_first_session_to_end(backend: Backend) {
    let world = world(backend).await;
    let first = pay(&world).await;
    assert!(
        wait_for(|| async { session_state(&world, first).await == Some(SessionState::Active) })
            .await
    );
    let second = pay(&world).await;
    assert!(
        wait_for(|| async { session_state(&world, second).await == Some(SessionState::Queued) })
            .await,
        "queued behind the first"
    );
    world.clock.advance(chrono::Duration::minutes(31));
    assert!(
        wait_for(|| async { session_state(&world, first).await == Some(SessionState::Completed) })
            .await
    );
    assert!(
        wait_for(|| async { session_state(&world, second).await == Some(SessionState::Active) })
            .await,
        "the queued session starts"
    );
    assert!(world.shelly.relay(PLUG, 0).unwrap().output);
    let (device, _) = world.app.state.buses.devices.load("washer").await.unwrap();
    assert_eq!(
        device.holder_session(),
        Some(second),
        "never two at once: the second now holds the relay"
    );
    world.app.stop().await;
}

on_both_backends!(a_second_guest_waits_for_the_first_session_to_end);

async fn the_sweep_turns_off_a_relay_switched_on_behind_our_back(backend: Backend) {
    let world = world(backend).await;
    world.shelly.switch_external(PLUG, 0, true).unwrap();
    assert!(world.shelly.relay(PLUG, 0).unwrap().output);
    assert!(
        wait_for(|| async { !world.shelly.relay(PLUG, 0).unwrap().output }).await,
        "switched OFF by the sweep"
    );
    let found = wait_for(|| async {
        let response = world
            .app
            .client
            .get(format!(
                "{}/api/audit?action=reconciliation",
                world.app.address
            ))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        body["items"]
            .as_array()
            .is_some_and(|items| !items.is_empty())
    })
    .await;
    assert!(
        found,
        "the correction is in the audit log as reconciliation"
    );
    world.app.stop().await;
}

on_both_backends!(the_sweep_turns_off_a_relay_switched_on_behind_our_back);
