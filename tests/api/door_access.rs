//! The door workflow end to end: Stripe simulator → webhook → payment → TTLock simulator
//! → a code that opens the lock; refund → the code is deleted and no longer opens.

use std::time::Duration;

use chrono::Utc;
use latchkey::cqrs::CommandMetadata;
use latchkey::sim::stripe::{DeliveryMode, StripeSimConfig, StripeSimHandle};
use latchkey::sim::ttlock::{TtlockSimConfig, TtlockSimHandle};
use latchkey::startup::BuildOptions;
use latchkey::store::journal::Journal;
use latchkey_aggregates::door::AccessCodeState;
use latchkey_aggregates::payment::{PaymentCommand, PaymentStatus};
use latchkey_aggregates::Actor;
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::helpers::{
    eventually, spawn_app_with_settings, Backend, TestApp, TestDatabase, ADMIN_TOKEN,
};
use crate::on_both_backends;
use crate::sim_helpers::GATEWAY_LOCK;
use crate::stripe_support::{API_KEY, SECRET};

struct World {
    app: TestApp,
    stripe: StripeSimHandle,
    ttlock: TtlockSimHandle,
}

async fn world(backend: Backend) -> World {
    let stripe = latchkey::sim::stripe::spawn(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        StripeSimConfig::new(API_KEY, vec![SECRET.to_string()]),
    )
    .unwrap();
    let ttlock = latchkey::sim::ttlock::spawn(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        TtlockSimConfig::default(),
    )
    .unwrap();
    let stripe_base = stripe.url();
    let app = spawn_app_with_settings(
        TestDatabase::create(backend).await,
        BuildOptions::default(),
        |settings| {
            settings.stripe.secret_key = Some(SecretString::from(API_KEY.to_string()));
            settings.stripe.api_base = Some(stripe_base.parse().unwrap());
            settings.stripe.webhook_secrets = vec![SecretString::from(SECRET.to_string())];
            crate::sim_helpers::use_ttlock_sim(settings, &ttlock);
        },
    )
    .await;
    stripe.set_webhook_url(format!("{}/api/stripe/webhook", app.address));
    let door = json!({"uid": GATEWAY_LOCK.to_string(), "name": "Room 12", "location": "Lyon",
                      "time_zone": "Europe/Paris", "price": 1500, "currency": "eur", "access_minutes": 60});
    assert_eq!(
        app.post_json("/api/doors", Some(ADMIN_TOKEN), &door)
            .await
            .status(),
        201
    );
    World {
        app,
        stripe,
        ttlock,
    }
}

async fn pay(world: &World) -> Uuid {
    let response = world
        .app
        .post_json(
            &format!("/api/checkout/door/{GATEWAY_LOCK}"),
            None,
            &json!({"email": "guest@example.com"}),
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

async fn code_reaches(world: &World, payment_id: Uuid, state: AccessCodeState) -> Option<String> {
    let door_uid = GATEWAY_LOCK.to_string();
    for _ in 0..300 {
        let (door, _) = world.app.state.buses.doors.load(&door_uid).await.unwrap();
        if let Some(access) = door
            .access_code(payment_id)
            .filter(|access| access.state == state)
        {
            return Some(access.code.clone().unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    None
}

async fn events_of(app: &TestApp, event_type: &str) -> usize {
    Journal::new(app.database.clone())
        .aggregate_events("Door", &GATEWAY_LOCK.to_string(), None)
        .await
        .unwrap()
        .iter()
        .filter(|event| event.event_type == event_type)
        .count()
}

async fn a_paid_guest_gets_one_code_that_a_refund_takes_away(backend: Backend) {
    let world = world(backend).await;
    // Stripe delivers every webhook three times at once.
    world
        .stripe
        .set_delivery(DeliveryMode::Duplicate { copies: 3 });
    let payment_id = pay(&world).await;
    let code = code_reaches(&world, payment_id, AccessCodeState::Issued)
        .await
        .expect("a code is issued");
    assert!(
        world
            .ttlock
            .enter_passcode(GATEWAY_LOCK, &code, Utc::now())
            .unwrap()
            .opens
    );
    assert_eq!(
        events_of(&world.app, "AccessCodeIssued").await,
        1,
        "one code, however often Stripe knocks"
    );

    // An admin refunds in full through Stripe; Stripe's charge.refunded makes it a fact.
    let refund = PaymentCommand::RequestRefund {
        refund_request_id: Uuid::new_v4(),
        amount: None,
        reason: "guest complaint".into(),
        actor: Actor::Operator { id: "admin".into() },
        at: Utc::now(),
    };
    world
        .app
        .state
        .buses
        .payments
        .execute(
            &payment_id.to_string(),
            refund,
            CommandMetadata::new("operator:admin", "test"),
        )
        .await
        .unwrap();
    assert!(
        code_reaches(&world, payment_id, AccessCodeState::Revoked)
            .await
            .is_some()
            || {
                let (door, _) = world
                    .app
                    .state
                    .buses
                    .doors
                    .load(&GATEWAY_LOCK.to_string())
                    .await
                    .unwrap();
                door.access_code(payment_id)
                    .is_some_and(|c| c.state == AccessCodeState::Revoked)
            }
    );
    let (payment, _) = world
        .app
        .state
        .buses
        .payments
        .load(&payment_id.to_string())
        .await
        .unwrap();
    assert_eq!(payment.status(), PaymentStatus::Refunded);
    assert!(
        !world
            .ttlock
            .enter_passcode(GATEWAY_LOCK, &code, Utc::now())
            .unwrap()
            .opens,
        "a refunded code no longer opens"
    );
    world.app.stop().await;
}

async fn a_code_is_issued_once_ttlock_is_back(backend: Backend) {
    let world = world(backend).await;
    world
        .ttlock
        .set_gateway_online(GATEWAY_LOCK, false)
        .unwrap();
    let payment_id = pay(&world).await;
    assert!(
        eventually(200, Duration::from_millis(25), || async {
            events_of(&world.app, "AccessCodeIssueFailed").await >= 2
        })
        .await,
        "failed attempts are recorded and retried"
    );
    world.ttlock.set_gateway_online(GATEWAY_LOCK, true).unwrap();
    let code = code_reaches(&world, payment_id, AccessCodeState::Issued)
        .await
        .expect("issued after TTLock came back");
    assert!(
        world
            .ttlock
            .enter_passcode(GATEWAY_LOCK, &code, Utc::now())
            .unwrap()
            .opens
    );
    world.app.stop().await;
}

on_both_backends!(
    a_paid_guest_gets_one_code_that_a_refund_takes_away,
    a_code_is_issued_once_ttlock_is_back
);
