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
    app_on_sims_with_deadline(database, options, endpoints, None).await
}

/// `access_deadline`: how long a paid guest waits for a code before the refund (the
/// default 15 minutes when `None`).
async fn app_on_sims_with_deadline(
    database: TestDatabase,
    options: BuildOptions,
    endpoints: SimEndpoints,
    access_deadline: Option<Duration>,
) -> TestApp {
    spawn_app_with_settings(database, options, |settings| {
        if let Some(deadline) = access_deadline {
            settings.access.deadline = deadline;
        }
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
    world_with_deadline(backend, options, None).await
}

async fn world_with_deadline(
    backend: Backend,
    options: BuildOptions,
    access_deadline: Option<Duration>,
) -> World {
    let (stripe, ttlock) = spawn_sims().await;
    let app = app_on_sims_with_deadline(
        TestDatabase::create(backend).await,
        options,
        endpoints(&stripe, &ttlock),
        access_deadline,
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

/// TTLock stays offline past the retry limit: each failure is audited with TTLock's reason
/// (the TTLock module `failing` in health), and after the last one the guest is refunded
/// automatically — one Stripe refund, the decision audited with its rule — and the guest
/// page says so.
async fn a_code_ttlock_never_accepts_is_refunded_after_the_last_attempt(backend: Backend) {
    let mut options = BuildOptions::default();
    options.workflows.access_code_attempts = 3;
    let world = world_with(backend, options).await;
    world
        .ttlock
        .set_gateway_online(GATEWAY_LOCK, false)
        .unwrap();
    let (payment_id, checkout_session, status_url) = checkout_with_page(&world.app).await;
    world
        .stripe
        .pay(&checkout_session, "4242424242424242")
        .unwrap();
    assert!(
        code_reaches(&world, payment_id, AccessCodeState::Compensated)
            .await
            .is_some(),
        "the guest is compensated"
    );
    assert_eq!(
        events_of(&world.app, "AccessCodeIssueFailed").await,
        3,
        "three attempts"
    );
    assert!(
        refunded(&world.app, payment_id).await,
        "the guest is refunded automatically"
    );
    // The backoff after the third attempt would be 400 ms: no fourth comes.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(
        events_of(&world.app, "AccessCodeIssueFailed").await,
        3,
        "no attempt past the limit"
    );
    assert_eq!(events_of(&world.app, "AccessCodeIssued").await, 0);
    assert_eq!(stripe_refunds(&world.stripe), 1, "one Stripe refund");

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
    let decision = compensation_audited(&world.app).await;
    assert_eq!(
        decision["details"]["rule"], "issue_attempts_exhausted",
        "{decision}"
    );
    assert_eq!(decision["details"]["issue_attempts"], 3, "{decision}");
    assert!(
        decision["details"]["last_error"]
            .as_str()
            .is_some_and(|error| error.to_lowercase().contains("gateway")),
        "{decision}"
    );
    guest_page_says_refunded(&world.app, &status_url).await;

    let health = get_json(&world.app, "/api/health/modules").await;
    let ttlock = health["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|module| module["name"] == "ttlock")
        .unwrap_or_else(|| panic!("a ttlock module in {health}"));
    // The failures stay on health; the state itself may be `ok` again, because the
    // stray-passcode search after the compensation reached TTLock's cloud (only the
    // lock's gateway was offline).
    assert!(
        ttlock["calls_failed_total"]
            .as_u64()
            .is_some_and(|failed| failed >= 3),
        "{ttlock}"
    );
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
    a_code_ttlock_never_accepts_is_refunded_after_the_last_attempt,
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

/// Starts a door checkout; returns the payment, its Checkout Session and the guest's page.
async fn checkout_with_page(app: &TestApp) -> (Uuid, String, String) {
    let response = app
        .post_json(
            &format!("/api/checkout/door/{GATEWAY_LOCK}"),
            None,
            &json!({"email": "guest@example.com"}),
        )
        .await;
    let body: Value = response.json().await.unwrap();
    let payment_id: Uuid = body["payment_id"].as_str().unwrap().parse().unwrap();
    let status_url = body["status_url"].as_str().unwrap().to_string();
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
        status_url,
    )
}

async fn set_door_status(app: &TestApp, status: &str) {
    let response = app
        .patch_json(
            &format!("/api/doors/{GATEWAY_LOCK}"),
            Some(ADMIN_TOKEN),
            &json!({"status": status, "reason": "battery change"}),
        )
        .await;
    assert_eq!(response.status(), 200);
}

async fn payment_status(app: &TestApp, payment_id: Uuid) -> PaymentStatus {
    let (payment, _) = app
        .state
        .buses
        .payments
        .load(&payment_id.to_string())
        .await
        .unwrap();
    payment.status()
}

/// Whether the payment becomes `refunded` (Stripe reported the refund) within 10 s.
async fn refunded(app: &TestApp, payment_id: Uuid) -> bool {
    eventually(400, Duration::from_millis(25), || async {
        payment_status(app, payment_id).await == PaymentStatus::Refunded
    })
    .await
}

/// Refunds Stripe created.
fn stripe_refunds(stripe: &StripeSimHandle) -> usize {
    stripe
        .events()
        .iter()
        .filter(|event| event["type"] == "refund.created")
        .count()
}

/// Scheduled jobs whose key starts with `prefix`.
async fn jobs_like(app: &TestApp, prefix: &str) -> i64 {
    let pattern = format!("{prefix}%");
    latchkey::on_pool!(&app.database, pool => {
        sqlx::query_scalar("SELECT COUNT(*) FROM scheduled_jobs WHERE job_key LIKE $1")
            .bind(&pattern)
            .fetch_one(pool)
            .await
            .unwrap()
    })
}

/// The one audited compensation decision.
async fn compensation_audited(app: &TestApp) -> Value {
    assert!(
        eventually(200, Duration::from_millis(25), || async {
            let audit = get_json(app, "/api/audit?action=access_compensation_decided").await;
            audit["items"].as_array().map(Vec::len) == Some(1)
        })
        .await,
        "the decision is audited once"
    );
    let audit = get_json(app, "/api/audit?action=access_compensation_decided").await;
    audit["items"][0].clone()
}

/// The guest's page (JSON and HTML) says the door could not be opened and the guest was
/// refunded.
async fn guest_page_says_refunded(app: &TestApp, status_url: &str) {
    let token = status_url.rsplit('/').next().unwrap();
    let json: Value = app
        .get(&format!("/api/access/{token}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(json["state"], "refunded", "{json}");
    assert_eq!(json["refund_completed"], true, "{json}");
    assert!(json["passcode"].is_null(), "{json}");
    let message = json["message"].as_str().unwrap();
    assert!(message.contains("could not open the door"), "{message}");
    assert!(message.contains("you were refunded"), "{message}");
    let html = app
        .get(&format!("/access/{token}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("you were refunded"), "{html}");
}

const SHORT_DEADLINE: Duration = Duration::from_secs(2);

/// The door goes into maintenance between the guest's checkout and Stripe's webhook, and
/// stays so: at the access deadline the guest is refunded (one Stripe refund), the decision
/// is audited with its rule and inputs, and the page says so. No code is ever issued.
async fn a_guest_paying_for_a_door_in_maintenance_is_refunded_at_the_deadline(backend: Backend) {
    let world = world_with_deadline(backend, BuildOptions::default(), Some(SHORT_DEADLINE)).await;
    let (payment_id, checkout_session, status_url) = checkout_with_page(&world.app).await;
    set_door_status(&world.app, "maintenance").await;
    world
        .stripe
        .pay(&checkout_session, "4242424242424242")
        .unwrap();
    assert!(
        refunded(&world.app, payment_id).await,
        "refunded at the deadline"
    );
    assert_eq!(stripe_refunds(&world.stripe), 1, "one Stripe refund");
    let decision = compensation_audited(&world.app).await;
    assert_eq!(decision["actor"], "system", "{decision}");
    assert_eq!(decision["details"]["rule"], "deadline_passed", "{decision}");
    assert_eq!(
        decision["details"]["door_status"], "maintenance",
        "{decision}"
    );
    assert_eq!(decision["details"]["deadline_seconds"], 2, "{decision}");
    assert_eq!(decision["details"]["payment_id"], payment_id.to_string());
    // The audit log is a projection: the order may reach it a moment after the refund.
    assert!(
        eventually(200, Duration::from_millis(25), || async {
            let ordered = get_json(&world.app, "/api/audit?action=refund_requested").await;
            ordered["items"]
                .as_array()
                .is_some_and(|items| !items.is_empty())
        })
        .await,
        "the refund order is audited"
    );
    let ordered = get_json(&world.app, "/api/audit?action=refund_requested").await;
    assert_eq!(ordered["items"][0]["actor"], "system", "{ordered}");
    assert!(
        ordered["items"][0]["details"]["reason"]
            .as_str()
            .is_some_and(|reason| reason.starts_with("automatic refund")),
        "{ordered}"
    );
    guest_page_says_refunded(&world.app, &status_url).await;

    // Maintenance ends after the refund: the waiting issue job finds the payment refunded.
    set_door_status(&world.app, "active").await;
    assert!(
        eventually(200, Duration::from_millis(25), || async {
            jobs_like(&world.app, "issue:").await == 0
        })
        .await,
        "the waiting issue job ends"
    );
    assert_eq!(
        events_of(&world.app, "AccessCodeIssued").await,
        0,
        "no code for a refunded guest"
    );
    assert_eq!(stripe_refunds(&world.stripe), 1);
    world.app.stop().await;
}

/// An issue attempt whose answer was lost to a crash (TTLock created the code, the journal
/// never heard of it) must not leave a working code for a guest who is then refunded
/// (simulation seed 7040): after the compensation the code is found by its name on the
/// lock and deleted, and the removal is audited.
async fn a_code_left_on_the_lock_by_an_unrecorded_attempt_is_deleted_when_the_guest_is_refunded(
    backend: Backend,
) {
    let world = world_with_deadline(backend, BuildOptions::default(), Some(SHORT_DEADLINE)).await;
    let (payment_id, checkout_session, _) = checkout_with_page(&world.app).await;
    // What the lost attempt left behind: a custom code under the payment's name.
    let client = latchkey::integrations::ttlock::TtlockClient::new(
        world.ttlock.client_config(),
        latchkey::integrations::health::ModuleHealth::new("ttlock"),
    )
    .unwrap();
    let now = chrono::Utc::now();
    client
        .add_custom_passcode(&latchkey::integrations::ttlock::CustomPasscodeRequest {
            lock_id: GATEWAY_LOCK,
            name: format!("Latchkey {payment_id}"),
            code: "8402715".to_string(),
            valid_from: now,
            valid_until: now + chrono::Duration::hours(1),
        })
        .await
        .unwrap();
    let stray_on_lock = || {
        world
            .ttlock
            .sim()
            .state()
            .iter()
            .filter(|lock| lock.lock_id == GATEWAY_LOCK)
            .flat_map(|lock| lock.passcodes.clone())
            .any(|code| code.code == "8402715" && code.on_lock)
    };
    assert!(stray_on_lock());
    set_door_status(&world.app, "maintenance").await;
    world
        .stripe
        .pay(&checkout_session, "4242424242424242")
        .unwrap();
    assert!(
        refunded(&world.app, payment_id).await,
        "refunded at the deadline"
    );
    assert!(
        eventually(400, Duration::from_millis(25), || async {
            !stray_on_lock()
        })
        .await,
        "the code the lost attempt left is deleted from the lock"
    );
    // The removal is journalled after TTLock's answer, then projected: wait for the row.
    assert!(
        eventually(400, Duration::from_millis(25), || async {
            let removed = get_json(&world.app, "/api/audit?action=stray_passcodes_removed").await;
            removed["items"]
                .as_array()
                .is_some_and(|items| !items.is_empty())
        })
        .await,
        "the removal reaches the audit log"
    );
    let removed = get_json(&world.app, "/api/audit?action=stray_passcodes_removed").await;
    assert_eq!(
        removed["items"].as_array().map(Vec::len),
        Some(1),
        "{removed}"
    );
    assert_eq!(removed["items"][0]["details"]["count"], 1, "{removed}");
    world.app.stop().await;
}

/// Maintenance ends before the deadline: the waiting code is issued, and the deadline
/// passes without a refund.
async fn maintenance_ending_before_the_deadline_issues_the_code_and_refunds_nothing(
    backend: Backend,
) {
    let deadline = Duration::from_secs(4);
    let world = world_with_deadline(backend, BuildOptions::default(), Some(deadline)).await;
    let (payment_id, checkout_session, status_url) = checkout_with_page(&world.app).await;
    set_door_status(&world.app, "maintenance").await;
    world
        .stripe
        .pay(&checkout_session, "4242424242424242")
        .unwrap();
    assert!(
        eventually(200, Duration::from_millis(25), || async {
            jobs_like(&world.app, "issue:").await == 1
                && jobs_like(&world.app, "access-deadline:").await == 1
        })
        .await,
        "the door refused the code: an issue job waits for the maintenance, and the deadline runs"
    );
    set_door_status(&world.app, "active").await;
    let code = code_reaches(&world, payment_id, AccessCodeState::Issued)
        .await
        .expect("the code is issued once maintenance ends");
    assert!(
        world
            .ttlock
            .enter_passcode(GATEWAY_LOCK, &code, Utc::now())
            .unwrap()
            .opens
    );
    assert!(
        eventually(400, Duration::from_millis(25), || async {
            jobs_like(&world.app, "access-deadline:").await == 0
        })
        .await,
        "the deadline passes"
    );
    assert_eq!(events_of(&world.app, "AccessCompensationDecided").await, 0);
    assert_eq!(stripe_refunds(&world.stripe), 0, "no refund");
    assert_eq!(
        payment_status(&world.app, payment_id).await,
        PaymentStatus::Succeeded
    );
    let token = status_url.rsplit('/').next().unwrap();
    let page: Value = world
        .app
        .get(&format!("/api/access/{token}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["state"], "ready", "{page}");
    world.app.stop().await;
}

/// The lock's gateway is offline when the guest pays; an operator brings it back and
/// reissues the code before the deadline: the code is issued (by the operator, audited),
/// and the deadline passes without a refund. An auditor may not do it.
async fn an_operator_reissue_before_the_deadline_issues_the_code_and_refunds_nothing(
    backend: Backend,
) {
    let deadline = Duration::from_secs(4);
    let world = world_with_deadline(backend, BuildOptions::default(), Some(deadline)).await;
    world
        .ttlock
        .set_gateway_online(GATEWAY_LOCK, false)
        .unwrap();
    let payment_id = pay(&world).await;
    assert!(
        code_reaches(&world, payment_id, AccessCodeState::Failed)
            .await
            .is_some(),
        "the first attempt fails"
    );
    let path = format!("/api/payments/{payment_id}/reissue-code");
    let auditor = world.app.token(latchkey::http::auth::Role::Auditor).await;
    let refused = world.app.post_json(&path, Some(&auditor), &json!({})).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(
        world.app.post_json(&path, None, &json!({})).await.status(),
        401
    );
    world.ttlock.set_gateway_online(GATEWAY_LOCK, true).unwrap();
    let operator = world.app.token(latchkey::http::auth::Role::Operator).await;
    let response = world
        .app
        .post_json(&path, Some(&operator), &json!({}))
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["state"], "issued", "{body}");
    assert_eq!(body["door_uid"], GATEWAY_LOCK.to_string());
    assert!(
        eventually(200, Duration::from_millis(25), || async {
            let audit = get_json(&world.app, "/api/audit?action=access_code_reissued").await;
            audit["items"][0]["actor"]
                .as_str()
                .is_some_and(|actor| actor.starts_with("operator:"))
        })
        .await,
        "the reissue is audited with the operator"
    );
    assert!(
        eventually(400, Duration::from_millis(25), || async {
            jobs_like(&world.app, "access-deadline:").await == 0
        })
        .await,
        "the deadline passes"
    );
    assert_eq!(events_of(&world.app, "AccessCompensationDecided").await, 0);
    assert_eq!(stripe_refunds(&world.stripe), 0, "no refund");
    let code = code_reaches(&world, payment_id, AccessCodeState::Issued)
        .await
        .expect("the code stays live");
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
    a_guest_paying_for_a_door_in_maintenance_is_refunded_at_the_deadline,
    a_code_left_on_the_lock_by_an_unrecorded_attempt_is_deleted_when_the_guest_is_refunded,
    maintenance_ending_before_the_deadline_issues_the_code_and_refunds_nothing,
    an_operator_reissue_before_the_deadline_issues_the_code_and_refunds_nothing,
);

/// The Checkout Session is created with `expires_at` (30 minutes by default, a minute of
/// leeway inside Stripe's bound); when Stripe expires it, the payment becomes `expired`,
/// the session can no longer be paid, and the guest's link says nothing was charged.
async fn a_checkout_session_expires_and_its_payment_becomes_expired(backend: Backend) {
    let world = world(backend).await;
    let before = Utc::now().timestamp();
    let (payment_id, checkout_session, status_url) = checkout_with_page(&world.app).await;
    let after = Utc::now().timestamp();
    let request = world
        .stripe
        .requests()
        .into_iter()
        .find(|request| request.method == "POST" && request.path == "/v1/checkout/sessions")
        .expect("the session was created at Stripe");
    let expires_at: i64 = url::form_urlencoded::parse(request.body.as_bytes())
        .find(|(name, _)| name == "expires_at")
        .map(|(_, value)| value.parse().unwrap())
        .expect("the session is created with expires_at");
    assert!(
        (before + 31 * 60..=after + 31 * 60).contains(&expires_at),
        "31 minutes from now: {expires_at} not in {before}..{after} + 31 min"
    );
    let created = Journal::new(world.app.database.clone())
        .aggregate_events("Payment", &payment_id.to_string(), None)
        .await
        .unwrap()
        .into_iter()
        .find(|event| event.event_type == "CheckoutSessionCreated")
        .unwrap();
    assert_eq!(
        created.payload["expires_at"]
            .as_str()
            .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
            .map(|at| at.timestamp()),
        Some(expires_at),
        "the payment records when its checkout expires"
    );

    world
        .stripe
        .expire_checkout_session(&checkout_session)
        .unwrap();
    assert!(
        eventually(200, Duration::from_millis(25), || async {
            payment_status(&world.app, payment_id).await == PaymentStatus::Expired
        })
        .await,
        "the expired session's payment is expired"
    );
    assert!(
        world
            .stripe
            .pay(&checkout_session, "4242424242424242")
            .is_err(),
        "an expired session cannot be paid"
    );
    let token = status_url.rsplit('/').next().unwrap();
    assert_eq!(
        world
            .app
            .get(&format!("/api/access/{token}"))
            .await
            .status(),
        410
    );
    world.app.stop().await;
}

on_both_backends!(a_checkout_session_expires_and_its_payment_becomes_expired);

/// Every webhook of a paid payment was lost and its events are older than the catch-up
/// job lists (31 days): the per-payment re-sync asks Stripe for the PaymentIntent of the
/// stuck `pending` payment, feeds the success into the inbox, and the guest gets a code.
async fn a_payment_whose_events_fell_outside_the_list_is_recovered_by_the_resync(backend: Backend) {
    let mut options = BuildOptions::default();
    options.stripe.catch_up = latchkey::integrations::stripe::CatchUpOptions {
        interval: None,
        resync_after: Duration::ZERO,
        ..Default::default()
    };
    let world = world_with(backend, options).await;
    world.stripe.set_delivery(DeliveryMode::Off);
    let payment_id = pay(&world).await;
    world.stripe.backdate_events(31 * 24 * 60 * 60);
    let stripe = world.app.state.stripe.clone();
    assert!(
        eventually(100, Duration::from_millis(100), || async {
            stripe.catch_up_now().await.unwrap();
            payment_status(&world.app, payment_id).await == PaymentStatus::Succeeded
        })
        .await,
        "the re-sync recovers the success"
    );
    let sources: Vec<(String, String)> = latchkey::on_pool!(&world.app.database, pool => {
        sqlx::query_as("SELECT event_id, source FROM stripe_inbox")
            .fetch_all(pool)
            .await
            .unwrap()
    });
    assert!(
        sources
            .iter()
            .any(|(id, source)| id.starts_with("evt_resync_") && source == "catch_up"),
        "{sources:?}"
    );
    assert!(code_reaches(&world, payment_id, AccessCodeState::Issued)
        .await
        .is_some());
    assert_eq!(stripe.catch_up_now().await.unwrap().inserted, 0, "once");
    world.app.stop().await;
}

on_both_backends!(a_payment_whose_events_fell_outside_the_list_is_recovered_by_the_resync);

/// Turns the period-code fallback on for the test door, through the operators' API.
async fn allow_offline_fallback(app: &TestApp) {
    let response = app
        .patch_json(
            &format!("/api/doors/{GATEWAY_LOCK}"),
            Some(ADMIN_TOKEN),
            &json!({"offline_fallback": true}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let door: Value = response.json().await.unwrap();
    assert_eq!(door["offline_fallback"], true, "{door}");
    // The list (the catalogue projection) shows it too.
    assert!(
        eventually(200, Duration::from_millis(25), || async {
            let doors = get_json(app, "/api/doors").await;
            doors["items"].as_array().is_some_and(|items| {
                items.iter().any(|door| {
                    door["uid"].as_str().and_then(|uid| uid.parse().ok()) == Some(GATEWAY_LOCK)
                        && door["offline_fallback"] == true
                })
            })
        })
        .await,
        "GET /api/doors shows the fallback"
    );
}

/// Period codes TTLock was asked for (`/v3/keyboardPwd/get`).
fn period_code_requests(ttlock: &TtlockSimHandle) -> usize {
    ttlock
        .requests()
        .iter()
        .filter(|request| request.path.ends_with("/v3/keyboardPwd/get"))
        .count()
}

/// Issue 14: the lock has a gateway, but it is offline when the guest pays, and the door
/// allows the fallback. The guest gets a random period code at once (TTLock computes it
/// without the gateway; it opens the lock), well within the deadline, so nothing is
/// refunded; the journal records it as a fallback period code that cannot be revoked
/// remotely, and the page says so honestly (whole hours, cannot be cancelled remotely).
/// A refund then shows the code as still opening the door until its end.
async fn a_door_allowing_the_fallback_gives_a_period_code_while_the_gateway_is_offline(
    backend: Backend,
) {
    let deadline = Duration::from_secs(4);
    let world = world_with_deadline(backend, BuildOptions::default(), Some(deadline)).await;
    allow_offline_fallback(&world.app).await;
    world
        .ttlock
        .set_gateway_online(GATEWAY_LOCK, false)
        .unwrap();
    let (payment_id, checkout_session, status_url) = checkout_with_page(&world.app).await;
    world
        .stripe
        .pay(&checkout_session, "4242424242424242")
        .unwrap();
    let code = code_reaches(&world, payment_id, AccessCodeState::Issued)
        .await
        .expect("a period code is issued while the gateway is offline");
    assert!(
        world
            .ttlock
            .enter_passcode(GATEWAY_LOCK, &code, Utc::now())
            .unwrap()
            .opens,
        "the period code opens the lock"
    );
    assert_eq!(period_code_requests(&world.ttlock), 1);

    let issued = Journal::new(world.app.database.clone())
        .aggregate_events("Door", &GATEWAY_LOCK.to_string(), None)
        .await
        .unwrap()
        .into_iter()
        .find(|event| event.event_type == "AccessCodeIssued")
        .unwrap();
    assert_eq!(
        issued.payload["remotely_revocable"], false,
        "{}",
        issued.payload
    );
    assert_eq!(
        issued.payload["fallback"]["kind"], "random_period",
        "{}",
        issued.payload
    );
    assert!(
        issued.payload["fallback"]["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("-3002")),
        "TTLock's answer is kept: {}",
        issued.payload
    );
    let audit = get_json(
        &world.app,
        "/api/audit?action=door_offline_fallback_changed",
    )
    .await;
    assert!(
        audit["items"][0]["actor"]
            .as_str()
            .is_some_and(|actor| actor.starts_with("operator")),
        "{audit}"
    );

    // The page is honest about what the guest got.
    let token = status_url.rsplit('/').next().unwrap().to_string();
    let page: Value = world
        .app
        .get(&format!("/api/access/{token}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["state"], "ready", "{page}");
    assert_eq!(page["passcode"], code, "{page}");
    assert_eq!(page["offline_fallback"], true, "{page}");
    assert_eq!(page["remotely_revocable"], false, "{page}");
    for end in ["valid_from", "valid_to"] {
        let at = chrono::DateTime::parse_from_rfc3339(page[end].as_str().unwrap()).unwrap();
        assert_eq!(at.timestamp() % 3600, 0, "whole hours: {page}");
    }
    let message = page["message"].as_str().unwrap();
    assert!(message.contains("whole hours"), "{message}");
    assert!(
        message.contains("cannot be cancelled remotely"),
        "{message}"
    );
    let html = world
        .app
        .get(&format!("/access/{token}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("time-limited code in whole hours that cannot be cancelled remotely"),
        "{html}"
    );

    // The deadline passes without a refund: the guest was served.
    assert!(
        eventually(400, Duration::from_millis(25), || async {
            jobs_like(&world.app, "access-deadline:").await == 0
        })
        .await,
        "the deadline passes"
    );
    assert_eq!(events_of(&world.app, "AccessCompensationDecided").await, 0);
    assert_eq!(stripe_refunds(&world.stripe), 0, "no refund");

    // A refund cannot take a period code back: the page says it opens until its end.
    let refund = world
        .app
        .post_json(
            &format!("/api/payments/{payment_id}/refund"),
            Some(ADMIN_TOKEN),
            &json!({"reason": "guest complaint"}),
        )
        .await;
    assert_eq!(refund.status(), 202);
    assert!(refunded(&world.app, payment_id).await, "refunded");
    let gone = world.app.get(&format!("/api/access/{token}")).await;
    assert_eq!(gone.status(), 410);
    let body = gone.text().await.unwrap();
    assert!(body.contains("keeps opening the door until"), "{body}");
    assert!(body.contains("gateway was not working"), "{body}");
    world.app.stop().await;
}

/// The same offline gateway on a door that does not allow the fallback: no period code is
/// asked for, and the guest is refunded at the deadline as before.
async fn a_door_without_the_fallback_refunds_a_guest_whose_gateway_stays_offline(backend: Backend) {
    let world = world_with_deadline(backend, BuildOptions::default(), Some(SHORT_DEADLINE)).await;
    world
        .ttlock
        .set_gateway_online(GATEWAY_LOCK, false)
        .unwrap();
    let (payment_id, checkout_session, status_url) = checkout_with_page(&world.app).await;
    world
        .stripe
        .pay(&checkout_session, "4242424242424242")
        .unwrap();
    assert!(
        refunded(&world.app, payment_id).await,
        "refunded at the deadline"
    );
    let decision = compensation_audited(&world.app).await;
    assert_eq!(decision["details"]["rule"], "deadline_passed", "{decision}");
    guest_page_says_refunded(&world.app, &status_url).await;
    assert_eq!(events_of(&world.app, "AccessCodeIssued").await, 0);
    assert_eq!(period_code_requests(&world.ttlock), 0, "no fallback");
    assert_eq!(stripe_refunds(&world.stripe), 1);
    world.app.stop().await;
}

on_both_backends!(
    a_door_allowing_the_fallback_gives_a_period_code_while_the_gateway_is_offline,
    a_door_without_the_fallback_refunds_a_guest_whose_gateway_stays_offline,
);
