//! Money facts beside the happy path (issue 13): an amount below the price holds the door
//! code until an admin grants it; a dispute revokes the code and a lost one lowers net
//! revenue; prices typed in the dashboard in the currency's own precision.

use chrono::Utc;
use latchkey::http::auth::Role;
use latchkey::sim::stripe::{StripeSimConfig, StripeSimHandle};
use latchkey::sim::ttlock::{TtlockSimConfig, TtlockSimHandle};
use latchkey::startup::BuildOptions;
use latchkey::store::journal::Journal;
use latchkey_aggregates::door::AccessCodeState;
use secrecy::SecretString;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::dashboard_pages::{login, page, post_form};
use crate::helpers::{
    eventually, spawn_app, spawn_app_with_settings, Backend, TestApp, TestDatabase, ADMIN_TOKEN,
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
    world_priced(backend, 1500, "eur").await
}

async fn world_priced(backend: Backend, price: i64, currency: &str) -> World {
    world_configured(backend, price, currency, true).await
}

/// A door at `price` on the simulators; `dispute_revokes_access` is
/// `LATCHKEY_DISPUTE_REVOKES_ACCESS`.
async fn world_configured(
    backend: Backend,
    price: i64,
    currency: &str,
    dispute_revokes_access: bool,
) -> World {
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
    let (stripe_base, ttlock_base) = (stripe.url(), ttlock.base_url().clone());
    let database = TestDatabase::create(backend).await;
    let app = spawn_app_with_settings(database, BuildOptions::default(), |settings| {
        settings.stripe.secret_key = Some(SecretString::from(API_KEY.to_string()));
        settings.stripe.api_base = Some(stripe_base.parse().unwrap());
        settings.stripe.webhook_secrets = vec![SecretString::from(SECRET.to_string())];
        let ttlock = TtlockSimConfig::default();
        settings.ttlock.api_base = Some(ttlock_base.clone());
        settings.ttlock.client_id = Some(ttlock.client_id.clone());
        settings.ttlock.client_secret = Some(ttlock.client_secret.clone());
        settings.ttlock.username = Some(ttlock.username.clone());
        settings.ttlock.password = Some(ttlock.password.clone());
        settings.dispute_revokes_access = dispute_revokes_access;
    })
    .await;
    stripe.set_webhook_url(format!("{}/api/stripe/webhook", app.address));
    let door = json!({"uid": GATEWAY_LOCK.to_string(), "name": "Room 12", "location": "Lyon",
                      "time_zone": "Europe/Paris", "price": price, "currency": currency, "access_minutes": 60});
    let created = app.post_json("/api/doors", Some(ADMIN_TOKEN), &door).await;
    assert_eq!(created.status(), 201);
    World {
        app,
        stripe,
        ttlock,
    }
}

/// Starts a door checkout; returns the payment id and its Checkout Session.
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
    let session = payment.checkout_session_id().unwrap().to_string();
    (payment_id, session)
}

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

async fn code_state(app: &TestApp, payment_id: Uuid) -> Option<AccessCodeState> {
    let (door, _) = app
        .state
        .buses
        .doors
        .load(&GATEWAY_LOCK.to_string())
        .await
        .unwrap();
    door.access_code(payment_id).map(|access| access.state)
}

async fn door_events(app: &TestApp, event_type: &str) -> usize {
    Journal::new(app.database.clone())
        .aggregate_events("Door", &GATEWAY_LOCK.to_string(), None)
        .await
        .unwrap()
        .iter()
        .filter(|event| event.event_type == event_type)
        .count()
}

async fn an_underpaid_door_payment_grants_no_code_until_an_admin_grants_it(backend: Backend) {
    let world = world(backend).await;
    let app = &world.app;
    let (payment_id, session) = checkout(app).await;
    // A promotion code at checkout: Stripe collects 10.00 of the 15.00 price.
    world.stripe.apply_discount(&session, 500).unwrap();
    world.stripe.pay(&session, "4242424242424242").unwrap();

    let path = format!("/api/payments/{payment_id}");
    assert!(
        eventually(800, Duration::from_millis(25), || async {
            get_json(app, &path).await["access_held"] == true
        })
        .await,
        "the payment is held: {}",
        get_json(app, &path).await
    );
    let payment = get_json(app, &path).await;
    assert_eq!(payment["amount_mismatch"], "below");
    assert_eq!(payment["amount_received"], 1000);
    // The audit log is its own projection: it catches up.
    eventually(800, Duration::from_millis(25), || async {
        get_json(app, "/api/audit?action=amount_mismatch").await["items"]
            .as_array()
            .is_some_and(|items| !items.is_empty())
    })
    .await;
    let audit = get_json(app, "/api/audit?action=amount_mismatch").await;
    let entries = audit["items"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{audit}");
    assert_eq!(entries[0]["aggregate_id"], payment_id.to_string());
    let health = get_json(app, "/api/health/modules").await;
    assert_eq!(health["amount_mismatches"]["held"], 1, "{health}");
    assert_eq!(
        health["amount_mismatches"]["payments"][0]["payment_id"],
        payment_id.to_string()
    );
    // The inbox marks a delivery processed (with its note) after the payment's events are
    // journalled, so the note may follow the projection by a moment.
    let notes = || async {
        let deliveries = get_json(app, "/api/stripe/deliveries").await;
        let processed = deliveries["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|item| item["status"] == "processed")
            .filter_map(|item| item["event_id"].as_str())
            .map(|id| id.to_owned())
            .collect::<Vec<_>>();
        let mut notes = Vec::new();
        for id in processed {
            let delivery = get_json(app, &format!("/api/stripe/deliveries/{id}")).await;
            notes.extend(delivery["ignore_reason"].as_str().map(str::to_owned));
        }
        notes
    };
    assert!(
        eventually(800, Duration::from_millis(25), || async {
            notes()
                .await
                .iter()
                .any(|note| note.contains("below the expected 15.00 EUR"))
        })
        .await,
        "the deliveries page says why: {:?}",
        notes().await
    );
    let admin = login(&app.database, Role::Admin).await;
    let (_, list) = page(app, "/dashboard/payments", &admin).await;
    assert!(list.contains(">held<"), "the list flags the held payment");
    // The payment was processed without a code: the workflow held it.
    assert_eq!(code_state(app, payment_id).await, None);
    assert_eq!(door_events(app, "AccessCodeRequested").await, 0);

    // An operator may not decide; an admin may, and must say why.
    let grant = format!("/api/payments/{payment_id}/grant-access");
    let body = json!({"reason": "the guest paid the rest at the desk"});
    let operator = login(&app.database, Role::Operator).await;
    let forbidden = app
        .client
        .post(format!("{}{grant}", app.address))
        .header("cookie", &operator.cookie)
        .header("x-csrf-token", &operator.csrf)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(matches!(forbidden.status().as_u16(), 401 | 403));
    let empty = app
        .post_json(&grant, Some(ADMIN_TOKEN), &json!({"reason": " "}))
        .await;
    assert_eq!(empty.status(), 422);
    let granted = app.post_json(&grant, Some(ADMIN_TOKEN), &body).await;
    assert_eq!(granted.status(), 200);
    assert!(
        eventually(800, Duration::from_millis(25), || async {
            code_state(app, payment_id).await == Some(AccessCodeState::Issued)
        })
        .await,
        "granted: the code is issued"
    );
    let again = app.post_json(&grant, Some(ADMIN_TOKEN), &body).await;
    assert_eq!(again.status(), 409, "nothing left to grant");
    assert!(
        eventually(800, Duration::from_millis(25), || async {
            get_json(app, "/api/audit?action=access_granted").await["items"]
                .as_array()
                .is_some_and(|items| items.len() == 1)
        })
        .await,
        "the decision is audited"
    );
    world.app.stop().await;
}

async fn a_dispute_revokes_the_code_and_a_lost_one_lowers_net_revenue(backend: Backend) {
    let world = world(backend).await;
    let app = &world.app;
    let (payment_id, session) = checkout(app).await;
    let intent = world.stripe.pay(&session, "4242424242424242").unwrap();
    assert!(
        eventually(800, Duration::from_millis(25), || async {
            code_state(app, payment_id).await == Some(AccessCodeState::Issued)
        })
        .await
    );
    let (door, _) = app
        .state
        .buses
        .doors
        .load(&GATEWAY_LOCK.to_string())
        .await
        .unwrap();
    let code = door.access_code(payment_id).unwrap().code.clone().unwrap();
    let opens = |code: &str| {
        world
            .ttlock
            .enter_passcode(GATEWAY_LOCK, code, Utc::now())
            .unwrap()
            .opens
    };
    assert!(opens(&code));

    let dispute = world
        .stripe
        .create_dispute(intent["id"].as_str().unwrap())
        .unwrap();
    assert!(
        eventually(800, Duration::from_millis(25), || async {
            code_state(app, payment_id).await == Some(AccessCodeState::Revoked)
        })
        .await,
        "a dispute revokes the code"
    );
    assert!(!opens(&code), "the lock deleted the code");
    let path = format!("/api/payments/{payment_id}");
    assert!(
        eventually(800, Duration::from_millis(25), || async {
            get_json(app, &path).await["disputed"] == true
        })
        .await,
        "the payment is flagged disputed"
    );

    let admin = login(&app.database, Role::Admin).await;
    let (_, list) = page(app, "/dashboard/payments", &admin).await;
    assert!(list.contains(">disputed<"), "the list flags the dispute");
    let today = Utc::now().date_naive().to_string();
    let report_path = format!("/api/reports/revenue?from={today}&to={today}&tz=UTC");
    // Card disputes withdraw the money when opened: net goes down at once.
    assert!(
        eventually(800, Duration::from_millis(25), || async {
            get_json(app, &report_path).await["rows"][0]["disputes"] == 1500
        })
        .await,
        "{}",
        get_json(app, &report_path).await
    );
    world
        .stripe
        .close_dispute(dispute["id"].as_str().unwrap(), "lost")
        .unwrap();
    assert!(
        eventually(800, Duration::from_millis(25), || async {
            get_json(app, "/api/audit?action=dispute_closed").await["items"]
                .as_array()
                .is_some_and(|items| items.len() == 1)
        })
        .await
    );
    let row = &get_json(app, &report_path).await["rows"][0];
    assert_eq!(
        (
            row["gross"].as_i64(),
            row["disputes"].as_i64(),
            row["net"].as_i64()
        ),
        (Some(1500), Some(1500), Some(0)),
        "a lost dispute keeps the money withdrawn once: {row}"
    );
    world.app.stop().await;
}

on_both_backends!(
    an_underpaid_door_payment_grants_no_code_until_an_admin_grants_it,
    a_dispute_revokes_the_code_and_a_lost_one_lowers_net_revenue,
);

// --- Prices in the currency's own precision ---

async fn register(app: &TestApp, uid: &str, price: i64, currency: &str) {
    let door = json!({"uid": uid, "name": "Room", "location": "Kuwait City",
                      "time_zone": "Asia/Kuwait", "price": price, "currency": currency, "access_minutes": 60});
    let created = app.post_json("/api/doors", Some(ADMIN_TOKEN), &door).await;
    assert_eq!(created.status(), 201);
}

async fn door_price(app: &TestApp, uid: &str) -> i64 {
    let (door, _) = app.state.buses.doors.load(uid).await.unwrap();
    door.price().unwrap().amount_minor
}

async fn door_prices_are_typed_in_the_currency_s_own_precision(backend: Backend) {
    let app = spawn_app(backend).await;
    register(&app, "7101", 100, "jpy").await;
    register(&app, "7102", 1000, "kwd").await;
    let operator = login(&app.database, Role::Operator).await;
    for uid in ["7101", "7102"] {
        let path = format!("/dashboard/doors/{uid}");
        assert!(
            eventually(800, Duration::from_millis(25), || async {
                page(&app, &path, &operator).await.0 == 200
            })
            .await
        );
    }
    let edit = |uid: &'static str, price: &'static str| {
        let (app, operator) = (&app, &operator);
        async move {
            post_form(
                app,
                &format!("/dashboard/doors/{uid}"),
                operator,
                &[("price", price)],
            )
            .await
        }
    };
    let response = edit("7101", "500").await;
    assert!(
        response.status().is_redirection(),
        "{}: {}",
        response.status(),
        response.text().await.unwrap()
    );
    assert_eq!(
        door_price(&app, "7101").await,
        500,
        "¥500 is 500 minor units"
    );
    assert!(edit("7102", "1.250").await.status().is_redirection());
    assert_eq!(
        door_price(&app, "7102").await,
        1250,
        "1.250 KWD is 1250 fils"
    );

    let refused = edit("7102", "1.2505").await;
    assert_eq!(refused.status(), 422);
    let message = refused.text().await.unwrap();
    assert!(message.contains("KWD has 3 decimals at most"), "{message}");
    assert_eq!(door_price(&app, "7102").await, 1250, "unchanged");

    // The list is a projection: it catches up with the edits.
    eventually(800, Duration::from_millis(25), || async {
        let list = page(&app, "/dashboard/doors", &operator).await.1;
        list.contains("¥500") && list.contains("1.250 KWD")
    })
    .await;
    let (_, list) = page(&app, "/dashboard/doors", &operator).await;
    assert!(list.contains("¥500"), "{list}");
    assert!(list.contains("1.250 KWD"), "{list}");
    let (_, form) = page(&app, "/dashboard/doors/7102", &operator).await;
    assert!(
        form.contains(r#"value="1.250""#),
        "the form shows what it reads back"
    );
    app.stop().await;
}

on_both_backends!(door_prices_are_typed_in_the_currency_s_own_precision);

async fn a_kwd_door_is_paid_and_refunded_exactly_through_the_dashboard(backend: Backend) {
    let world = world_priced(backend, 1250, "kwd").await;
    let app = &world.app;
    let (payment_id, session) = checkout(app).await;
    world.stripe.pay(&session, "4242424242424242").unwrap();
    let path = format!("/api/payments/{payment_id}");
    assert!(
        eventually(800, Duration::from_millis(25), || async {
            get_json(app, &path).await["status"] == "succeeded"
        })
        .await
    );
    let admin = login(&app.database, Role::Admin).await;
    let detail = format!("/dashboard/payments/{payment_id}");
    let (_, body) = page(app, &detail, &admin).await;
    assert!(
        body.contains("1.250 KWD"),
        "shown in fils' precision: {body}"
    );
    let refund = format!("{detail}/refund");
    let refused = post_form(app, &refund, &admin, &[("amount", "1.2505")]).await;
    assert_eq!(refused.status(), 422);
    let confirm = post_form(app, &refund, &admin, &[("amount", "1.250")]).await;
    let body = confirm.text().await.unwrap();
    assert!(body.contains("Confirm refund of 1.250 KWD"), "{body}");
    assert!(body.contains(r#"name="amount" value="1.250""#), "{body}");
    let key = body
        .split(r#"name="idempotency_key" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let done = post_form(
        app,
        &refund,
        &admin,
        &[
            ("amount", "1.250"),
            ("confirm", "yes"),
            ("idempotency_key", &key),
        ],
    )
    .await;
    assert!(done.status().is_redirection() || done.status().is_success());
    assert!(
        eventually(800, Duration::from_millis(25), || async {
            get_json(app, &path).await["status"] == "refunded"
        })
        .await,
        "refunded in full: {}",
        get_json(app, &path).await
    );
    assert_eq!(get_json(app, &path).await["amount_refunded"], 1250);
    let refunds: Vec<_> = world
        .stripe
        .requests()
        .into_iter()
        .filter(|request| request.path == "/v1/refunds")
        .collect();
    assert!(!refunds.is_empty());
    assert!(
        refunds
            .iter()
            .all(|request| request.body.contains("amount=1250")),
        "Stripe was asked for 1250 fils exactly: {refunds:?}"
    );
    world.app.stop().await;
}

on_both_backends!(a_kwd_door_is_paid_and_refunded_exactly_through_the_dashboard);

/// Scheduled door-code issue jobs still waiting.
async fn issue_jobs(app: &TestApp) -> i64 {
    latchkey::on_pool!(&app.database, pool => {
        sqlx::query_scalar("SELECT COUNT(*) FROM scheduled_jobs WHERE job_key LIKE 'issue:%'")
            .fetch_one(pool)
            .await
            .unwrap()
    })
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

/// A code waiting for a door's maintenance is never issued once the guest's bank has
/// disputed the payment (issue 17, item 8): the dispute gave the money back. With
/// `LATCHKEY_DISPUTE_REVOKES_ACCESS` off, so that no revocation stands in the way: the
/// workflow itself withholds the code.
async fn a_disputed_payment_waiting_for_its_code_never_gets_one(backend: Backend) {
    let world = world_configured(backend, 1500, "eur", false).await;
    let app = &world.app;
    // The guest is at the checkout when the door goes into maintenance.
    let (payment_id, session) = checkout(app).await;
    set_door_status(app, "maintenance").await;
    let intent = world.stripe.pay(&session, "4242424242424242").unwrap();
    assert!(
        eventually(400, Duration::from_millis(25), || async {
            issue_jobs(app).await == 1
        })
        .await,
        "the code waits for the maintenance to end"
    );
    world
        .stripe
        .create_dispute(intent["id"].as_str().unwrap())
        .unwrap();
    assert!(
        eventually(400, Duration::from_millis(25), || async {
            let (payment, _) = app
                .state
                .buses
                .payments
                .load(&payment_id.to_string())
                .await
                .unwrap();
            payment.is_disputed()
        })
        .await,
        "the dispute is recorded"
    );
    set_door_status(app, "active").await;
    assert!(
        eventually(400, Duration::from_millis(25), || async {
            issue_jobs(app).await == 0
        })
        .await,
        "the waiting issue job ran when the maintenance ended"
    );
    assert_eq!(door_events(app, "AccessCodeIssued").await, 0);
    assert_ne!(
        code_state(app, payment_id).await,
        Some(AccessCodeState::Issued)
    );
    world.app.stop().await;
}

on_both_backends!(a_disputed_payment_waiting_for_its_code_never_gets_one);
