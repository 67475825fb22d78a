//! The door workflow end to end: Stripe simulator → webhook → payment → TTLock simulator
//! → a code that opens the lock; refund → the code is deleted and no longer opens.

use std::time::Duration;

use chrono::Utc;
use latchkey::cqrs::CommandMetadata;
use latchkey::sim::stripe::{DeliveryMode, StripeSimConfig, StripeSimHandle};
use latchkey::sim::ttlock::{TtlockSimConfig, TtlockSimHandle};
use latchkey::sim::FaultSettings;
use latchkey::startup::BuildOptions;
use latchkey::store::journal::{current_checkpoint, Journal};
use latchkey::workflows::door_access;
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

/// Where an app finds the simulators (owned, so an app can be built on another runtime).
struct SimEndpoints {
    stripe_base: String,
    ttlock_base: url::Url,
}

async fn spawn_sims() -> (StripeSimHandle, TtlockSimHandle) {
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
    (stripe, ttlock)
}

fn endpoints(stripe: &StripeSimHandle, ttlock: &TtlockSimHandle) -> SimEndpoints {
    SimEndpoints {
        stripe_base: stripe.url(),
        ttlock_base: ttlock.base_url().clone(),
    }
}

async fn app_on_sims(
    database: TestDatabase,
    options: BuildOptions,
    endpoints: SimEndpoints,
) -> TestApp {
    spawn_app_with_settings(database, options, |settings| {
        settings.stripe.secret_key = Some(SecretString::from(API_KEY.to_string()));
        settings.stripe.api_base = Some(endpoints.stripe_base.parse().unwrap());
        settings.stripe.webhook_secrets = vec![SecretString::from(SECRET.to_string())];
        let ttlock = TtlockSimConfig::default();
        settings.ttlock.api_base = Some(endpoints.ttlock_base.clone());
        settings.ttlock.client_id = Some(ttlock.client_id.clone());
        settings.ttlock.client_secret = Some(ttlock.client_secret.clone());
        settings.ttlock.username = Some(ttlock.username.clone());
        settings.ttlock.password = Some(ttlock.password.clone());
    })
    .await
}

async fn register_door(app: &TestApp) {
    let door = json!({"uid": GATEWAY_LOCK.to_string(), "name": "Room 12", "location": "Lyon",
                      "time_zone": "Europe/Paris", "price": 1500, "currency": "eur", "access_minutes": 60});
    assert_eq!(
        app.post_json("/api/doors", Some(ADMIN_TOKEN), &door)
            .await
            .status(),
        201
    );
}

async fn world(backend: Backend) -> World {
    world_with(backend, BuildOptions::default()).await
}

async fn world_with(backend: Backend, options: BuildOptions) -> World {
    let (stripe, ttlock) = spawn_sims().await;
    let app = app_on_sims(
        TestDatabase::create(backend).await,
        options,
        endpoints(&stripe, &ttlock),
    )
    .await;
    stripe.set_webhook_url(format!("{}/api/stripe/webhook", app.address));
    register_door(&app).await;
    World {
        app,
        stripe,
        ttlock,
    }
}

/// Starts a door checkout; returns the payment and its Checkout Session.
async fn checkout(app: &TestApp) -> (Uuid, String) {
    let response = app
        .post_json(
            &format!("/api/checkout/door/{GATEWAY_LOCK}"),
            None,
            &json!({"email": "guest@example.com"}),
        )
        .await;
    let body: Value = response.json().await.unwrap();
    let payment_id: Uuid = body["payment_id"].as_str().unwrap().parse().unwrap();
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
    )
}

async fn pay(world: &World) -> Uuid {
    let (payment_id, checkout_session) = checkout(&world.app).await;
    world
        .stripe
        .pay(&checkout_session, "4242424242424242")
        .unwrap();
    payment_id
}

async fn code_reaches(world: &World, payment_id: Uuid, state: AccessCodeState) -> Option<String> {
    code_on(&world.app, payment_id, state).await
}

/// The payment's code once it reaches `state` (within 7.5 s).
async fn code_on(app: &TestApp, payment_id: Uuid, state: AccessCodeState) -> Option<String> {
    let door_uid = GATEWAY_LOCK.to_string();
    for _ in 0..300 {
        let (door, _) = app.state.buses.doors.load(&door_uid).await.unwrap();
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

async fn get_json(app: &TestApp, path: &str) -> Value {
    app.client
        .get(format!("{}{path}", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// TTLock stays offline past the retry limit: the code is marked failed with TTLock's
/// reason, in the audit log and in the module health.
async fn a_code_ttlock_never_accepts_is_marked_failed_with_the_reason(backend: Backend) {
    let mut options = BuildOptions::default();
    options.workflows.access_code_attempts = 3;
    let world = world_with(backend, options).await;
    world
        .ttlock
        .set_gateway_online(GATEWAY_LOCK, false)
        .unwrap();
    let payment_id = pay(&world).await;
    assert!(
        code_reaches(&world, payment_id, AccessCodeState::Failed)
            .await
            .is_some(),
        "the code fails"
    );
    assert!(
        eventually(200, Duration::from_millis(25), || async {
            events_of(&world.app, "AccessCodeIssueFailed").await == 3
        })
        .await,
        "three attempts"
    );
    // The backoff after the third attempt would be 400 ms: no fourth comes.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(
        events_of(&world.app, "AccessCodeIssueFailed").await,
        3,
        "no attempt past the limit"
    );
    assert_eq!(events_of(&world.app, "AccessCodeIssued").await, 0);
    let (door, _) = world
        .app
        .state
        .buses
        .doors
        .load(&GATEWAY_LOCK.to_string())
        .await
        .unwrap();
    assert_eq!(
        door.access_code(payment_id).map(|access| access.state),
        Some(AccessCodeState::Failed)
    );

    assert!(
        eventually(200, Duration::from_millis(25), || async {
            let audit = get_json(&world.app, "/api/audit?action=access_code_failed").await;
            audit["items"].as_array().map(Vec::len) == Some(3)
        })
        .await,
        "each failure is audited"
    );
    let audit = get_json(&world.app, "/api/audit?action=access_code_failed").await;
    for item in audit["items"].as_array().unwrap() {
        let reason = item["details"]["reason"].as_str().unwrap_or_default();
        assert!(reason.to_lowercase().contains("gateway"), "{item}");
        assert_eq!(item["details"]["payment_id"], payment_id.to_string());
    }

    let health = get_json(&world.app, "/api/health/modules").await;
    let ttlock = health["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|module| module["name"] == "ttlock")
        .unwrap_or_else(|| panic!("a ttlock module in {health}"));
    assert_eq!(ttlock["state"], "failing", "{ttlock}");
    assert!(
        ttlock["last_error"]
            .as_str()
            .is_some_and(|error| error.to_lowercase().contains("gateway")),
        "{ttlock}"
    );
    assert!(ttlock["last_error_at"].is_string(), "{ttlock}");
    world.app.stop().await;
}

/// The workflow sees the payment again (its checkpoint put back, as after a crash before
/// it moved): the Door still has one code and TTLock still holds one.
async fn a_redelivered_payment_does_not_issue_a_second_code(backend: Backend) {
    let world = world(backend).await;
    let payment_id = pay(&world).await;
    let code = code_reaches(&world, payment_id, AccessCodeState::Issued)
        .await
        .expect("a code");
    let database = world.app.stop().await;
    let connection = database.connect().await;
    let last_position: i64 = latchkey::on_pool!(&connection, pool => {
        sqlx::query("UPDATE subscription_checkpoints SET transaction_id = 0, position = 0 WHERE name = $1")
            .bind(door_access::NAME)
            .execute(pool)
            .await
            .unwrap();
        sqlx::query_scalar("SELECT MAX(position) FROM events").fetch_one(pool).await.unwrap()
    });
    let app = app_on_sims(
        database,
        BuildOptions::default(),
        endpoints(&world.stripe, &world.ttlock),
    )
    .await;
    assert!(
        eventually(300, Duration::from_millis(25), || async {
            current_checkpoint(&app.database, door_access::NAME)
                .await
                .unwrap()
                .is_some_and(|cursor| cursor.position >= last_position)
        })
        .await,
        "the workflow went through the whole journal again"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(events_of(&app, "AccessCodeIssued").await, 1);
    assert_eq!(live_codes(&world.ttlock), vec![code]);
    app.stop().await;
}

/// Codes the lock would accept, as TTLock holds them.
fn live_codes(ttlock: &TtlockSimHandle) -> Vec<String> {
    ttlock
        .state()
        .into_iter()
        .find(|lock| lock.lock_id == GATEWAY_LOCK)
        .map(|lock| {
            lock.passcodes
                .into_iter()
                .filter(|passcode| passcode.on_lock && passcode.in_cloud)
                .map(|passcode| passcode.code)
                .collect()
        })
        .unwrap_or_default()
}

/// Kills the server (drops its runtime) after TTLock wrote the code but before its answer
/// came back, so nothing was recorded; the restarted server issues the payment's code once:
/// one `AccessCodeIssued`, one live code at TTLock, and it opens the lock.
async fn a_crash_after_ttlock_wrote_the_code_still_issues_it_once(backend: Backend) {
    let (stripe, ttlock) = spawn_sims().await;
    let database = TestDatabase::create(backend).await;
    let doomed = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (started, ready) = tokio::sync::oneshot::channel();
    let first_database = database.another_handle();
    let first_endpoints = endpoints(&stripe, &ttlock);
    doomed.spawn(async move {
        let app = app_on_sims(first_database, BuildOptions::default(), first_endpoints).await;
        register_door(&app).await;
        let warm_up = checkout(&app).await;
        let paid = checkout(&app).await;
        let _ = started.send((app.address.clone(), warm_up, paid));
        // Holds the app until its runtime is dropped.
        std::future::pending::<()>().await;
        drop(app);
    });
    let (address, (warm_id, warm_session), (payment_id, checkout_session)) = ready.await.unwrap();
    stripe.set_webhook_url(format!("{address}/api/stripe/webhook"));
    // A first guest warms the client up (token, lock list), so the next TTLock request is
    // the second guest's passcode.
    stripe.pay(&warm_session, "4242424242424242").unwrap();
    assert!(
        eventually(300, Duration::from_millis(25), || async {
            live_codes(&ttlock).len() == 1
        })
        .await,
        "the first guest's code"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    ttlock.set_faults(&FaultSettings {
        drop_next: Some(1),
        ..FaultSettings::default()
    });
    stripe.pay(&checkout_session, "4242424242424242").unwrap();
    assert!(
        eventually(300, Duration::from_millis(25), || async {
            ttlock
                .requests()
                .iter()
                .any(|request| request.dropped && request.path.contains("keyboardPwd/add"))
        })
        .await,
        "TTLock received the second code"
    );
    assert_eq!(live_codes(&ttlock).len(), 2, "and wrote it");
    tokio::task::spawn_blocking(move || doomed.shutdown_timeout(Duration::from_secs(10)))
        .await
        .unwrap();

    let app = app_on_sims(
        database,
        BuildOptions::default(),
        endpoints(&stripe, &ttlock),
    )
    .await;
    stripe.set_webhook_url(format!("{}/api/stripe/webhook", app.address));
    let code = code_on(&app, payment_id, AccessCodeState::Issued)
        .await
        .expect("the code is issued after the restart");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        events_of(&app, "AccessCodeIssued").await,
        2,
        "one per guest"
    );
    let codes = live_codes(&ttlock);
    assert_eq!(
        codes.len(),
        2,
        "one live code per guest at TTLock: {codes:?}"
    );
    assert!(codes.contains(&code));
    assert!(code_on(&app, warm_id, AccessCodeState::Issued)
        .await
        .is_some());
    assert!(
        ttlock
            .enter_passcode(GATEWAY_LOCK, &code, Utc::now())
            .unwrap()
            .opens
    );
    app.stop().await;
}

on_both_backends!(
    a_code_ttlock_never_accepts_is_marked_failed_with_the_reason,
    a_redelivered_payment_does_not_issue_a_second_code,
    a_crash_after_ttlock_wrote_the_code_still_issues_it_once,
);

/// The door's minutes change between the guest's checkout (60 minutes) and Stripe's
/// webhook: the code is valid for the 60 minutes locked at checkout, not the new 15.
async fn the_code_window_is_the_one_locked_at_checkout(backend: Backend) {
    let world = world(backend).await;
    let (payment_id, checkout_session) = checkout(&world.app).await;
    let response = world
        .app
        .patch_json(
            &format!("/api/doors/{GATEWAY_LOCK}"),
            Some(ADMIN_TOKEN),
            &json!({"access_minutes": 15}),
        )
        .await;
    assert_eq!(response.status(), 200);
    world
        .stripe
        .pay(&checkout_session, "4242424242424242")
        .unwrap();
    code_reaches(&world, payment_id, AccessCodeState::Issued)
        .await
        .expect("a code is issued");
    let (door, _) = world
        .app
        .state
        .buses
        .doors
        .load(&GATEWAY_LOCK.to_string())
        .await
        .unwrap();
    assert_eq!(
        door.access_minutes(),
        Some(15),
        "the door now sells 15 minutes"
    );
    let access = door.access_code(payment_id).unwrap();
    assert_eq!(access.access_minutes, Some(60));
    // TTLock takes whole minutes: the window is widened to the minute, never cut.
    let window = access.valid_to.unwrap() - access.valid_from.unwrap();
    assert!(
        (chrono::Duration::minutes(60)..=chrono::Duration::minutes(61)).contains(&window),
        "the guest bought 60 minutes, got {window}"
    );
    world.app.stop().await;
}

on_both_backends!(the_code_window_is_the_one_locked_at_checkout);
