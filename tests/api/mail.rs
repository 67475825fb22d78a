//! Email over SMTP (issue 21 item 1), against a real SMTP conversation with the test
//! harness's sink (`smtp_sink.rs`): the Stripe and TTLock simulators pay and open a door;
//! the outbox subscriber queues the receipt and the refund notice; the worker sends them.

use std::time::Duration;

use latchkey::mail::outbox;
use latchkey::mail::worker::MailWorkerOptions;
use latchkey::sim::stripe::{StripeSimConfig, StripeSimHandle};
use latchkey::sim::ttlock::{TtlockSimConfig, TtlockSimHandle};
use latchkey::startup::{BuildOptions, WorkflowOptions};
use latchkey::store::journal::{current_checkpoint, Journal};
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::helpers::{
    eventually, spawn_app, spawn_app_with_settings, Backend, TestApp, TestDatabase, ADMIN_TOKEN,
};
use crate::on_both_backends;
use crate::projections::wait_for_projections;
use crate::sim_helpers::GATEWAY_LOCK;
use crate::smtp_sink::{Received, SmtpSink};
use crate::stripe_support::{API_KEY, SECRET};

pub(crate) struct World {
    pub(crate) app: TestApp,
    pub(crate) stripe: StripeSimHandle,
    pub(crate) sink: SmtpSink,
    pub(crate) _ttlock: TtlockSimHandle,
}

async fn world(backend: Backend) -> World {
    world_with(backend, |_| {}).await
}

/// The mail tests' options: a fast mail worker.
pub(crate) fn mail_options() -> BuildOptions {
    BuildOptions {
        workflows: WorkflowOptions {
            mail: MailWorkerOptions {
                poll_interval: Duration::from_millis(50),
                retry_base: Duration::from_millis(100),
                retry_max: Duration::from_millis(400),
                ..Default::default()
            },
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The Stripe and TTLock simulators, the SMTP sink, and an app using them with one door
/// registered; `adjust` changes the app's build options first.
pub(crate) async fn world_with(backend: Backend, adjust: impl FnOnce(&mut BuildOptions)) -> World {
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
    let sink = SmtpSink::start().await.unwrap();
    let mut options = mail_options();
    adjust(&mut options);
    let endpoints = MailEndpoints {
        stripe_base: stripe.url(),
        ttlock_base: ttlock.base_url().clone(),
        smtp_url: sink.url(),
    };
    let database = TestDatabase::create(backend).await;
    let app = spawn_mail_app(database, endpoints, options).await;
    stripe.set_webhook_url(format!("{}/api/stripe/webhook", app.address));
    register_door(&app).await;
    World {
        app,
        stripe,
        sink,
        _ttlock: ttlock,
    }
}

/// Where an app finds the simulators and the sink (owned, so an app can be built on
/// another runtime, one a test then kills).
#[derive(Clone)]
pub(crate) struct MailEndpoints {
    pub(crate) stripe_base: String,
    pub(crate) ttlock_base: url::Url,
    pub(crate) smtp_url: String,
}

/// An app on `database` using the simulators and mailing the sink.
pub(crate) async fn spawn_mail_app(
    database: TestDatabase,
    endpoints: MailEndpoints,
    options: BuildOptions,
) -> TestApp {
    spawn_app_with_settings(database, options, |settings| {
        settings.mail.smtp_url = Some(latchkey::mail::parse_smtp_url(&endpoints.smtp_url).unwrap());
        settings.mail.from =
            Some(latchkey::mail::parse_from("Latchkey <pay@latchkey.test>").unwrap());
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

/// Registers the door the mail tests pay for ("Room 12", the simulator's gateway lock)
/// and waits until the catalogue shows it.
pub(crate) async fn register_door(app: &TestApp) {
    let door = json!({"uid": GATEWAY_LOCK.to_string(), "name": "Room 12", "location": "Lyon",
                      "time_zone": "Europe/Paris", "price": 1500, "currency": "eur", "access_minutes": 60});
    let response = app.post_json("/api/doors", Some(ADMIN_TOKEN), &door).await;
    assert_eq!(response.status(), 201);
    // A door is in the catalogue long before a guest pays for it; the receipt reads its
    // name and zone from there, and an attempt made while the catalogue still lags is
    // retried (counted in `attempts`), which the receipt test would take for a resend.
    wait_for_projections(&app.database).await;
}

/// A guest starts a door checkout with `email` on `app`; returns the payment id and the
/// Checkout Session to pay.
pub(crate) async fn start_door_checkout(app: &TestApp, email: &str) -> (String, String) {
    let response = app
        .post_json(
            &format!("/api/checkout/door/{GATEWAY_LOCK}"),
            None,
            &json!({ "email": email }),
        )
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    let payment_id = body["payment_id"].as_str().unwrap().to_string();
    let (payment, _) = app.state.buses.payments.load(&payment_id).await.unwrap();
    let session = payment.checkout_session_id().unwrap().to_string();
    (payment_id, session)
}

/// A guest pays for the door with `email`; returns the payment id.
pub(crate) async fn pay(world: &World, email: &str) -> String {
    let (payment_id, session) = start_door_checkout(&world.app, email).await;
    world.stripe.pay(&session, "4242424242424242").unwrap();
    payment_id
}

/// Waits (up to 20 s) until `recipient` has at least `count` messages; returns them.
pub(crate) async fn mail_for(sink: &SmtpSink, recipient: &str, count: usize) -> Vec<Received> {
    let arrived = eventually(400, Duration::from_millis(50), || {
        let arrived = sink.to(recipient).len() >= count;
        async move { arrived }
    })
    .await;
    assert!(
        arrived,
        "{recipient} got {} of {count} mails",
        sink.to(recipient).len()
    );
    sink.to(recipient)
}

/// The access token in a receipt's link (`…/access/<43 characters>`).
pub(crate) fn access_token(text: &str) -> String {
    let start = text.find("/access/").expect("a link to the access page") + "/access/".len();
    text[start..start + latchkey::payments::tokens::TOKEN_LENGTH].to_string()
}

/// Waits until the outbox subscriber has read the whole journal and no mail is pending:
/// from then on the sink has everything that will ever be sent for what happened so far.
pub(crate) async fn mail_settled(app: &TestApp) {
    let settled = eventually(400, Duration::from_millis(50), || async {
        let head = Journal::new(app.database.clone())
            .head_position()
            .await
            .unwrap();
        let read = current_checkpoint(&app.database, outbox::NAME)
            .await
            .unwrap()
            .map_or(0, |cursor| cursor.position);
        let pending = outbox::list(&app.database, Some("pending"), 10)
            .await
            .unwrap();
        read >= head && pending.is_empty()
    })
    .await;
    assert!(settled, "the mail outbox did not settle");
}

/// Item 1: a paid door guest receives exactly one receipt, with a link that opens their
/// access page and the code that page shows.
async fn a_paid_door_guest_receives_one_receipt_with_a_working_link_and_the_code(backend: Backend) {
    let world = world(backend).await;
    pay(&world, "guest@example.com").await;
    let receipts = mail_for(&world.sink, "guest@example.com", 1).await;
    let receipt = &receipts[0];
    assert_eq!(receipt.from, "pay@latchkey.test");
    assert_eq!(receipt.subject(), "Your code for Room 12");
    let text = receipt.text();
    assert!(text.contains("multipart/alternative"), "{text}");
    assert!(text.contains("text/plain") && text.contains("text/html"));
    assert!(text.contains("€15.00"), "{text}");
    let token = access_token(&text);
    let page: Value = world
        .app
        .get(&format!("/api/access/{token}"))
        .await
        .json()
        .await
        .unwrap();
    let code = page["passcode"].as_str().expect("the link shows the code");
    assert!(text.contains(&format!("Code: {code}")), "{text}");
    assert!(text.contains("(Europe/Paris)"), "{text}");

    // Another guest's purchase mails them, and the first guest still has one receipt.
    pay(&world, "second@example.com").await;
    mail_for(&world.sink, "second@example.com", 1).await;
    mail_settled(&world.app).await;
    assert_eq!(world.sink.to("guest@example.com").len(), 1);
    let sent = outbox::list(&world.app.database, Some("sent"), 10)
        .await
        .unwrap();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent.iter().all(|row| row.attempts == 1));
    world.app.stop().await;
}

/// Item 1: a refund sends the guest one notice, however many ways Stripe reports it.
async fn a_refund_sends_one_notice(backend: Backend) {
    let world = world(backend).await;
    let payment_id = pay(&world, "guest@example.com").await;
    mail_for(&world.sink, "guest@example.com", 1).await;
    let refund = world
        .app
        .post_json(
            &format!("/api/payments/{payment_id}/refund"),
            Some(ADMIN_TOKEN),
            &json!({"reason": "the guest could not come"}),
        )
        .await;
    assert_eq!(refund.status(), 202, "{}", refund.text().await.unwrap());
    let mails = mail_for(&world.sink, "guest@example.com", 2).await;
    let notice = mails
        .iter()
        .find(|mail| mail.subject().starts_with("Your refund"))
        .expect("a refund notice");
    assert_eq!(notice.subject(), "Your refund of €15.00");
    assert!(notice.text().contains(&payment_id));
    mail_settled(&world.app).await;
    let notices = world
        .sink
        .to("guest@example.com")
        .into_iter()
        .filter(|mail| mail.subject().starts_with("Your refund"))
        .count();
    assert_eq!(notices, 1);
    world.app.stop().await;
}

on_both_backends!(
    a_paid_door_guest_receives_one_receipt_with_a_working_link_and_the_code,
    a_refund_sends_one_notice,
);

/// Item 1: without `LATCHKEY_SMTP_URL` and `LATCHKEY_MAIL_FROM`, email is "not configured"
/// in module health, and the dashboard's mail page says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_is_not_configured_without_its_variables() {
    let app = spawn_app(Backend::Sqlite).await;
    let health: Value = app
        .get_with_token("/api/health/modules", ADMIN_TOKEN)
        .await
        .json()
        .await
        .unwrap();
    let email = health["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|module| module["name"] == "email")
        .cloned()
        .expect("an email module");
    assert_eq!(email["state"], "not_configured", "{email}");
    assert_eq!(email["configured"], false);
    app.stop().await;
}
