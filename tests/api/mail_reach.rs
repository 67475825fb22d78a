//! Email, the rest of issue 21 item 1, against the SMTP sink (real SMTP over TCP): a crash
//! at each point between the fact and the server's acceptance still delivers one message;
//! "lost your link?" resends working links, answers the same for unknown addresses and is
//! rate-limited; an operator's password reset link works once and not after an hour (the
//! app's clock moved by hand); admins are alerted once per money or access failure and per
//! parked reaction; a device guest gets a receipt with the plan and times once charged;
//! the demo's sink lists what was sent.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use latchkey::accounts::{password, users};
use latchkey::http::auth::Role;
use latchkey::mail::outbox;
use latchkey::store::journal::JournalEvent;
use latchkey::store::parking::permanent;
use latchkey::store::subscription::{Delivery, Subscriber};
use latchkey::store::Tx;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::accounts_support::{enrolled_user, Agent};
use crate::device_sessions::{session_state, wait_for};
use crate::helpers::{eventually, Backend, TestApp, TestDatabase, ADMIN_TOKEN};
use crate::mail::{
    access_token, mail_for, mail_options, mail_settled, pay, register_door, spawn_mail_app,
    start_door_checkout, world_with, MailEndpoints,
};
use crate::on_both_backends;
use crate::smtp_sink::{Received, SmtpSink, Stall};
use crate::stripe_support::{API_KEY, SECRET};

const GUEST: &str = "guest@example.com";

// --- A crash between the fact and the send -------------------------------------------

/// A guest pays on a server that stops answering mid-mail at `stall` (the sink holds the
/// conversation there) and is then killed — its whole runtime dropped wherever each task
/// stands — after the receipt's outbox row was written. A new server on the same database
/// sends the receipt. Returns it and the sink.
async fn crash_at(backend: Backend, stall: Stall) -> (TestApp, SmtpSink) {
    let stripe = latchkey::sim::stripe::spawn(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        latchkey::sim::stripe::StripeSimConfig::new(API_KEY, vec![SECRET.to_string()]),
    )
    .unwrap();
    let ttlock = latchkey::sim::ttlock::spawn(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        latchkey::sim::ttlock::TtlockSimConfig::default(),
    )
    .unwrap();
    let sink = SmtpSink::start().await.unwrap();
    sink.stall_next(stall);
    let endpoints = MailEndpoints {
        stripe_base: stripe.url(),
        ttlock_base: ttlock.base_url().clone(),
        smtp_url: sink.url(),
    };
    // A claimed row is kept from other senders for the lease; short, so the restarted
    // server retries within the test.
    let mut options = mail_options();
    options.workflows.mail.lease = Duration::from_secs(1);
    let database = TestDatabase::create(backend).await;
    let doomed = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (started, checkout_ready) = tokio::sync::oneshot::channel();
    let (first_database, first_endpoints, first_options) = (
        database.another_handle(),
        endpoints.clone(),
        options.clone(),
    );
    doomed.spawn(async move {
        let app = spawn_mail_app(first_database, first_endpoints, first_options).await;
        register_door(&app).await;
        let (_, session) = start_door_checkout(&app, GUEST).await;
        let _ = started.send((app.address.clone(), session));
        // Holds the app until its runtime is dropped.
        std::future::pending::<()>().await;
        drop(app);
    });
    let (address, session) = checkout_ready.await.unwrap();
    stripe.set_webhook_url(format!("{address}/api/stripe/webhook"));
    stripe.pay(&session, "4242424242424242").unwrap();
    assert!(
        eventually(400, Duration::from_millis(50), || {
            let stalled = sink.stalled() == 1;
            async move { stalled }
        })
        .await,
        "the worker reached the stall point ({stall:?})"
    );
    tokio::task::spawn_blocking(move || doomed.shutdown_timeout(Duration::from_secs(10)))
        .await
        .unwrap();

    let rows = outbox::list(&database.connect().await, None, 10)
        .await
        .unwrap();
    assert_eq!(
        rows.len(),
        1,
        "the receipt was queued before the crash: {rows:?}"
    );
    assert_eq!(rows[0].status, "pending", "and not marked sent: {rows:?}");

    let app = spawn_mail_app(database, endpoints, options).await;
    stripe.set_webhook_url(format!("{}/api/stripe/webhook", app.address));
    mail_for(&sink, GUEST, 1).await;
    mail_settled(&app).await;
    let sent = outbox::list(&app.database, Some("sent"), 10).await.unwrap();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].frozen.is_none(), "a sent row keeps no link");
    (app, sink)
}

/// The receipt opens the guest's access page with the code.
async fn assert_receipt_works(app: &TestApp, receipt: &Received) {
    let token = access_token(&receipt.text());
    let page: Value = app
        .get(&format!("/api/access/{token}"))
        .await
        .json()
        .await
        .unwrap();
    let code = page["passcode"].as_str().expect("the link shows the code");
    assert!(receipt.text().contains(&format!("Code: {code}")));
}

/// Crash before anything reached the server (the greeting never came): one delivery.
async fn a_crash_before_the_smtp_conversation_still_sends_exactly_one(backend: Backend) {
    let (app, sink) = crash_at(backend, Stall::AtGreeting).await;
    let deliveries = sink.deliveries_to(GUEST);
    assert_eq!(deliveries.len(), 1, "one message on the wire");
    assert_receipt_works(&app, &deliveries[0]).await;
    app.stop().await;
}

/// Crash after the whole message was sent but before the server accepted it: the server
/// discards an unanswered DATA, the restart sends it once.
async fn a_crash_while_sending_still_sends_exactly_one(backend: Backend) {
    let (app, sink) = crash_at(backend, Stall::BeforeAccepting).await;
    let deliveries = sink.deliveries_to(GUEST);
    assert_eq!(deliveries.len(), 1, "one message on the wire");
    assert_receipt_works(&app, &deliveries[0]).await;
    app.stop().await;
}

/// Crash after the server accepted the message, before its "250" was read and the row
/// marked: SMTP cannot tell the sender that the server has it, so it is sent again — the
/// same bytes (the frozen message: same Message-ID, same Date, same link), which the
/// mailbox files as one message.
async fn a_crash_after_the_server_accepted_repeats_the_identical_message_filed_once(
    backend: Backend,
) {
    let (app, sink) = crash_at(backend, Stall::AfterAccepting).await;
    let deliveries = sink.deliveries_to(GUEST);
    assert_eq!(
        deliveries.len(),
        2,
        "accepted before the crash and again after"
    );
    assert_eq!(
        deliveries[0].data, deliveries[1].data,
        "byte for byte the same"
    );
    assert!(deliveries[0].message_id().is_some());
    assert_eq!(sink.to(GUEST).len(), 1, "one message in the mailbox");
    assert_receipt_works(&app, &deliveries[1]).await;
    app.stop().await;
}

on_both_backends!(
    a_crash_before_the_smtp_conversation_still_sends_exactly_one,
    a_crash_while_sending_still_sends_exactly_one,
    a_crash_after_the_server_accepted_repeats_the_identical_message_filed_once,
);

// --- Lost your link? ---------------------------------------------------------------

async fn ask_for_links(app: &TestApp, email: &str) -> (u16, String) {
    let response = app
        .client
        .post(format!("{}/lost-link", app.address))
        .form(&[("email", email)])
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

fn resends(sink: &SmtpSink, email: &str) -> Vec<Received> {
    sink.to(email)
        .into_iter()
        .filter(|mail| mail.subject() == "Your links again")
        .collect()
}

/// A guest who lost the link asks with the email they paid with and gets a working link;
/// an unknown email gets the very same page and no mail.
async fn lost_your_link_resends_a_working_link_and_tells_nothing_about_unknown_addresses(
    backend: Backend,
) {
    let world = world_with(backend, |_| {}).await;
    pay(&world, GUEST).await;
    mail_for(&world.sink, GUEST, 1).await;

    let form = world.app.get("/lost-link").await;
    assert_eq!(form.status(), 200);
    assert!(form
        .text()
        .await
        .unwrap()
        .contains(r#"action="/lost-link""#));
    let pay_page = world.app.get("/pay/4410021").await.text().await.unwrap();
    assert!(
        pay_page.contains(r#"href="/lost-link""#),
        "the pay page leads there"
    );

    let (status, known) = ask_for_links(&world.app, "Guest@Example.com").await;
    assert_eq!(status, 200);
    let mails = mail_for(&world.sink, GUEST, 2).await;
    let resend = mails
        .iter()
        .find(|mail| mail.subject() == "Your links again")
        .expect("the links again");
    let text = resend.text();
    assert!(text.contains("text/plain") && text.contains("text/html"));
    assert!(text.contains("Room 12"), "{text}");
    let token = access_token(&text);
    let page: Value = world
        .app
        .get(&format!("/api/access/{token}"))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        page["passcode"].as_str().is_some(),
        "the link works: {page}"
    );

    let (status, unknown) = ask_for_links(&world.app, "nobody@example.com").await;
    assert_eq!(status, 200);
    assert_eq!(
        unknown.replace("nobody@example.com", "EMAIL"),
        known.replace("guest@example.com", "EMAIL"),
        "the same answer for an address we do not know"
    );
    mail_settled(&world.app).await;
    assert!(world.sink.to("nobody@example.com").is_empty());
    assert_eq!(resends(&world.sink, GUEST).len(), 1);
    world.app.stop().await;
}

/// Three requests per address typed, ten per client address, per hour; past either, 429
/// and no mail.
async fn lost_your_link_is_rate_limited_per_email_and_per_client(backend: Backend) {
    let world = world_with(backend, |_| {}).await;
    pay(&world, GUEST).await;
    mail_for(&world.sink, GUEST, 1).await;
    for _ in 0..3 {
        assert_eq!(ask_for_links(&world.app, GUEST).await.0, 200);
    }
    assert_eq!(ask_for_links(&world.app, GUEST).await.0, 429);
    // Seven more addresses from the same client reach its ten; the eleventh is refused.
    for index in 0..7 {
        let other = format!("other{index}@example.com");
        assert_eq!(ask_for_links(&world.app, &other).await.0, 200);
    }
    assert_eq!(ask_for_links(&world.app, "late@example.com").await.0, 429);
    mail_settled(&world.app).await;
    assert_eq!(
        resends(&world.sink, GUEST).len(),
        3,
        "one mail per admitted request"
    );
    world.app.stop().await;
}

on_both_backends!(
    lost_your_link_resends_a_working_link_and_tells_nothing_about_unknown_addresses,
    lost_your_link_is_rate_limited_per_email_and_per_client,
);

// --- Password reset ------------------------------------------------------------------

/// The wall clock plus an offset the test moves forward (the app's `Clock`).
#[derive(Default)]
struct MovedClock {
    offset: std::sync::Mutex<chrono::Duration>,
}

impl MovedClock {
    fn advance(&self, by: chrono::Duration) {
        *self.offset.lock().unwrap() += by;
    }
}

impl latchkey::reconciler::Clock for MovedClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now() + *self.offset.lock().unwrap()
    }
}

const OPERATOR: &str = "ops@example.com";
const OLD_PASSWORD: &str = "correct horse battery";
const NEW_PASSWORD: &str = "staple paper clip river";

/// "Forgot your password?" as a browser does it: the form (and its CSRF cookie), then the
/// post.
async fn forgot(app: &TestApp, email: &str) -> (u16, String) {
    let mut agent = Agent::new(&app.address);
    let csrf = agent.get("/login/forgot").await.csrf();
    let page = agent
        .post("/login/forgot", &[("csrf_token", &csrf), ("email", email)])
        .await;
    (page.status.as_u16(), page.body)
}

/// The reset link's form, then its post; the status of the post. A link that no longer
/// works has no form: its own page's status is returned.
async fn reset(app: &TestApp, token: &str, new_password: &str) -> u16 {
    let mut agent = Agent::new(&app.address);
    let path = format!("/login/reset/{token}");
    let form = agent.get(&path).await;
    if form.status != 200 {
        return form.status.as_u16();
    }
    let csrf = form.csrf();
    let page = agent
        .post(
            &path,
            &[
                ("csrf_token", &csrf),
                ("new_password", new_password),
                ("confirm", new_password),
            ],
        )
        .await;
    page.status.as_u16()
}

/// A post of the reset form without the CSRF token, as another site's form would be.
async fn reset_without_csrf(app: &TestApp, token: &str, new_password: &str) -> u16 {
    app.client
        .post(format!("{}/login/reset/{token}", app.address))
        .form(&[("new_password", new_password), ("confirm", new_password)])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The token in a reset mail's link.
fn reset_token(mail: &Received) -> String {
    let text = mail.text();
    let start = text.find("/login/reset/").expect("a reset link") + "/login/reset/".len();
    text[start..start + latchkey::payments::tokens::TOKEN_LENGTH].to_string()
}

/// A password reset link works once; a second use, and a link older than an hour (the
/// app's clock moved 61 minutes), are refused; an unknown address gets the same answer
/// and no mail; the admin's own reset still works.
async fn a_password_reset_link_works_once_and_expires_after_an_hour(backend: Backend) {
    let clock = Arc::new(MovedClock::default());
    let app_clock = clock.clone();
    let world = world_with(backend, move |options| {
        options.workflows.clock = Some(app_clock);
    })
    .await;
    let app = &world.app;
    let hash = password::hash(OLD_PASSWORD).unwrap();
    users::create(&app.database, OPERATOR, Role::Operator, &hash, false)
        .await
        .unwrap();
    let login_page = app.get("/login").await.text().await.unwrap();
    assert!(login_page.contains(r#"href="/login/forgot""#));

    let (status, known) = forgot(app, OPERATOR).await;
    assert_eq!(status, 200);
    let (status, unknown) = forgot(app, "ghost@example.com").await;
    assert_eq!(status, 200);
    assert_eq!(
        unknown.replace("ghost@example.com", "EMAIL"),
        known.replace(OPERATOR, "EMAIL"),
        "the same answer for an address without an account"
    );
    let mails = mail_for(&world.sink, OPERATOR, 1).await;
    assert_eq!(mails[0].subject(), "Reset your Latchkey password");
    let text = mails[0].text();
    assert!(text.contains("text/plain") && text.contains("text/html"));
    let token = reset_token(&mails[0]);

    assert_eq!(
        app.get(&format!("/login/reset/{token}")).await.status(),
        200
    );
    assert_eq!(
        reset_without_csrf(app, &token, NEW_PASSWORD).await,
        403,
        "a post without the form's CSRF token is refused"
    );
    assert_eq!(
        reset(app, &token, NEW_PASSWORD).await,
        200,
        "the link works"
    );
    let mut agent = Agent::new(&app.address);
    let page = agent.submit_password(OPERATOR, NEW_PASSWORD).await;
    assert_eq!(page.status, 303, "the new password logs in");
    assert_eq!(
        reset(app, &token, "another long password").await,
        410,
        "a second use is refused"
    );
    let mut agent = Agent::new(&app.address);
    let page = agent
        .submit_password(OPERATOR, "another long password")
        .await;
    assert_eq!(page.status, 401, "and changed nothing");

    // A second link, used 61 minutes after it was asked for.
    forgot(app, OPERATOR).await;
    let mails = mail_for(&world.sink, OPERATOR, 2).await;
    let late = reset_token(&mails[1]);
    assert_ne!(late, token);
    clock.advance(chrono::Duration::minutes(61));
    assert_eq!(app.get(&format!("/login/reset/{late}")).await.status(), 410);
    assert_eq!(reset(app, &late, "another long password").await, 410);
    let mut agent = Agent::new(&app.address);
    let page = agent.submit_password(OPERATOR, NEW_PASSWORD).await;
    assert_eq!(page.status, 303, "the password is still the one chosen");

    // The admin can still reset anyone with a one-time password.
    let user = users::by_email(&app.database, OPERATOR)
        .await
        .unwrap()
        .unwrap();
    let one_time = password::hash("one time password 1").unwrap();
    users::reset_password(&app.database, &user.user_id, &one_time)
        .await
        .unwrap();
    let mut agent = Agent::new(&app.address);
    let page = agent.submit_password(OPERATOR, "one time password 1").await;
    assert_eq!(page.location.as_deref(), Some("/account/password"));

    mail_settled(app).await;
    assert!(world.sink.to("ghost@example.com").is_empty());
    assert_eq!(world.sink.to(OPERATOR).len(), 2);
    world.app.stop().await;
}

on_both_backends!(a_password_reset_link_works_once_and_expires_after_an_hour);

// --- Alerts to admins ----------------------------------------------------------------

const ADMIN: &str = "boss@example.com";
const SECOND_ADMIN: &str = "deputy@example.com";
const FORMER_ADMIN: &str = "gone@example.com";

/// Two active admins, one deactivated admin, one operator.
async fn staff(app: &TestApp) {
    let hash = password::hash(OLD_PASSWORD).unwrap();
    for (email, role) in [
        (ADMIN, Role::Admin),
        (SECOND_ADMIN, Role::Admin),
        (FORMER_ADMIN, Role::Admin),
        (OPERATOR, Role::Operator),
    ] {
        users::create(&app.database, email, role, &hash, false)
            .await
            .unwrap();
    }
    let former = users::by_email(&app.database, FORMER_ADMIN)
        .await
        .unwrap()
        .unwrap();
    users::deactivate(&app.database, &former.user_id)
        .await
        .unwrap();
}

fn alerts(sink: &SmtpSink, email: &str) -> Vec<Received> {
    sink.to(email)
        .into_iter()
        .filter(|mail| mail.subject().starts_with("Latchkey alert"))
        .collect()
}

/// A workflow that can never react to a door's new details: its reaction is parked.
struct Poisoned;

#[async_trait]
impl Subscriber for Poisoned {
    fn name(&self) -> &str {
        "poisoned"
    }

    fn delivery(&self) -> Delivery {
        Delivery::Effects
    }

    async fn apply(&self, _tx: &mut Tx, _event: &JournalEvent) -> anyhow::Result<()> {
        Ok(())
    }

    async fn react(&self, event: &JournalEvent) -> anyhow::Result<()> {
        if event.event_type == "DoorDetailsChanged" {
            return Err(permanent("this door's data cannot be handled"));
        }
        Ok(())
    }
}

/// A parked reaction alerts every active admin, in one message, once — also when an
/// operator's retry fails and parks it again.
async fn a_parked_reaction_alerts_the_admins_once(backend: Backend) {
    let world = world_with(backend, |_| {}).await;
    let app = &world.app;
    staff(app).await;
    let renamed = app
        .patch_json(
            "/api/doors/4410021",
            Some(ADMIN_TOKEN),
            &serde_json::json!({"name": "Room 12b"}),
        )
        .await;
    assert_eq!(renamed.status(), 200);
    // Run by the test, not spawned beside the app's own subscribers: on PostgreSQL each
    // spawned subscriber holds a connection, and the test pool has ten.
    app.subscriptions.catch_up(&Poisoned).await.unwrap();
    let parked = wait_for(|| async {
        let rows = latchkey::store::parking::list(&app.database, Some("parked"), 10)
            .await
            .unwrap();
        rows.len() == 1
    })
    .await;
    assert!(parked, "the door's change is parked for `poisoned`");
    let mails = mail_for(&world.sink, ADMIN, 1).await;
    let alert = &mails[0];
    assert_eq!(
        alert.subject(),
        "Latchkey alert: a workflow reaction is parked"
    );
    assert!(
        alert.to.contains(&SECOND_ADMIN.to_string()),
        "{:?}",
        alert.to
    );
    assert!(!alert.to.contains(&FORMER_ADMIN.to_string()));
    assert!(!alert.to.contains(&OPERATOR.to_string()));
    let text = alert.text();
    assert!(
        text.contains("poisoned could not react to DoorDetailsChanged"),
        "{text}"
    );
    assert!(text.contains("/dashboard/parked"));
    assert!(text.contains("text/plain") && text.contains("text/html"));

    let rows = latchkey::store::parking::list(&app.database, Some("parked"), 10)
        .await
        .unwrap();
    let retry = app
        .post_json(
            &format!("/api/parked-reactions/{}/retry", rows[0].parked_id),
            Some(ADMIN_TOKEN),
            &serde_json::json!({}),
        )
        .await;
    assert!(retry.status().is_success(), "{}", retry.status());
    app.subscriptions.catch_up(&Poisoned).await.unwrap();
    let parked_again = wait_for(|| async {
        latchkey::store::parking::get(&app.database, &rows[0].parked_id)
            .await
            .unwrap()
            .is_some_and(|row| row.status == "parked" && row.attempts > rows[0].attempts)
    })
    .await;
    assert!(parked_again, "the retry fails and parks it again");
    mail_settled(app).await;
    assert_eq!(
        alerts(&world.sink, ADMIN).len(),
        1,
        "one alert per parked event"
    );
    assert!(world.sink.to(FORMER_ADMIN).is_empty());

    // The dashboard's mail page lists it, sent, to the admins, about no payment.
    let viewer = enrolled_user(&app.database, "viewer@example.com", Role::Auditor).await;
    let mut agent = Agent::new(&app.address);
    agent.log_in(&app.database, &viewer).await;
    let page = agent.get("/dashboard/mail?status=sent").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("admin alert"), "{}", page.body);
    assert!(page.body.contains("<td>admins</td>"), "{}", page.body);
    assert!(page.body.contains("<td>—</td>"), "{}", page.body);
    world.app.stop().await;
}

on_both_backends!(a_parked_reaction_alerts_the_admins_once);

// --- Device sessions: receipt, and a capture Stripe declines -------------------------

/// The device world of `device_sessions.rs` (Stripe and Shelly simulators, a washer with a
/// 30-minute plan) mailing a fresh sink.
async fn device_world(backend: Backend) -> (crate::device_sessions::World, SmtpSink) {
    let sink = SmtpSink::start().await.unwrap();
    let mail = latchkey::mail::MailSettings {
        smtp_url: Some(latchkey::mail::parse_smtp_url(&sink.url()).unwrap()),
        from: Some(latchkey::mail::parse_from("Latchkey <pay@latchkey.test>").unwrap()),
    };
    let fast = mail_options().workflows.mail;
    let world = crate::device_sessions::world_with(backend, move |options| {
        options.workflows.mail_settings = Some(mail);
        options.workflows.mail = fast;
    })
    .await;
    (world, sink)
}

/// A device guest gets one receipt with the plan, the start and the end, and a link to
/// the session page, once the session runs and the payment is captured.
async fn a_device_guest_receives_a_receipt_with_the_plan_and_times(backend: Backend) {
    let (world, sink) = device_world(backend).await;
    let (payment_id, checkout_session) = crate::device_sessions::checkout(&world.app).await;
    world
        .sims
        .stripe
        .pay(&checkout_session, "4242424242424242")
        .unwrap();
    let mails = mail_for(&sink, GUEST, 1).await;
    let receipt = &mails[0];
    assert_eq!(receipt.subject(), "Your session on Washer");
    let text = receipt.text();
    assert!(text.contains("Plan: 30 minutes"), "{text}");
    assert!(text.contains("€3.00"), "{text}");
    assert!(
        text.contains("Started: ") && text.contains("Ends: "),
        "{text}"
    );
    assert!(text.contains("(Europe/Paris)"), "{text}");
    assert!(text.contains("text/plain") && text.contains("text/html"));
    let start = text.find("/session/").expect("a session link") + "/session/".len();
    let token = &text[start..start + latchkey::payments::tokens::TOKEN_LENGTH];
    let page: Value = world
        .app
        .get(&format!("/api/session/{token}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        page["state"], "active",
        "the link opens the live session: {page}"
    );
    let ends_at = page["ends_at"].as_str().unwrap().to_string();
    let ends: chrono::DateTime<chrono::Utc> = ends_at.parse().unwrap();
    let local = latchkey::ui::layout::local_time(ends, "Europe/Paris");
    assert!(
        text.contains(&format!("Ends: {local}")),
        "{text} vs {local}"
    );
    mail_settled(&world.app).await;
    assert_eq!(sink.to(GUEST).len(), 1);
    let _ = payment_id;
    world.app.stop().await;
}

/// A capture Stripe declines once the relay is ON alerts the admins once, and the guest,
/// who was not charged, gets no receipt.
async fn a_failed_capture_alerts_the_admins_and_sends_no_receipt(backend: Backend) {
    let (world, sink) = device_world(backend).await;
    staff(&world.app).await;
    let (payment_id, checkout_session) = crate::device_sessions::checkout(&world.app).await;
    let (payment, _) = world
        .app
        .state
        .buses
        .payments
        .load(&payment_id.to_string())
        .await
        .unwrap();
    let intent = payment.payment_intent_id().unwrap().to_string();
    world.sims.stripe.decline_next_capture(&intent).unwrap();
    world
        .sims
        .stripe
        .pay(&checkout_session, "4242424242424242")
        .unwrap();
    let mails = mail_for(&sink, ADMIN, 1).await;
    assert_eq!(mails[0].subject(), "Latchkey alert: a capture failed");
    let text = mails[0].text();
    assert!(
        text.contains(&format!("/dashboard/payments/{payment_id}")),
        "{text}"
    );
    assert!(text.contains("declined"), "{text}");
    assert!(
        wait_for(|| async {
            session_state(&world, payment_id).await
                == Some(latchkey_aggregates::session::SessionState::ForceEnded)
        })
        .await
    );
    mail_settled(&world.app).await;
    let capture_alerts: Vec<Received> = alerts(&sink, ADMIN)
        .into_iter()
        .filter(|mail| mail.subject() == "Latchkey alert: a capture failed")
        .collect();
    assert_eq!(capture_alerts.len(), 1, "one alert per failed capture");
    assert!(
        sink.to(GUEST).is_empty(),
        "no receipt for an uncharged guest"
    );
    world.app.stop().await;
}

on_both_backends!(
    a_device_guest_receives_a_receipt_with_the_plan_and_times,
    a_failed_capture_alerts_the_admins_and_sends_no_receipt,
);

// --- The demo ------------------------------------------------------------------------

/// `latchkey demo` runs the SMTP sink in-process and serves a page listing what was sent:
/// the demo admin's password reset shows up there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_lists_the_mail_it_sent() {
    let database = TestDatabase::create(Backend::Sqlite).await;
    let mut settings = crate::helpers::test_settings(&database.url);
    settings.listen = "127.0.0.1:0".parse().unwrap();
    let options = latchkey::startup::BuildOptions {
        subscriptions: crate::helpers::fast_subscriptions(),
        workflows: mail_options().workflows,
        ..Default::default()
    };
    let demo = latchkey::demo::Demo::start(settings, options)
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let mut agent = Agent::new(&demo.url);
    let csrf = agent.get("/login/forgot").await.csrf();
    let asked = agent
        .post(
            "/login/forgot",
            &[
                ("csrf_token", csrf.as_str()),
                ("email", latchkey::demo::DEMO_ADMIN_EMAIL),
            ],
        )
        .await;
    assert_eq!(asked.status, 200, "{}", asked.body);
    let mail_url = demo.mail_url();
    assert!(mail_url.starts_with("http://127.0.0.1:"), "{mail_url}");
    let listed = eventually(400, Duration::from_millis(50), || {
        let (client, url) = (client.clone(), mail_url.clone());
        async move {
            let page = client.get(&url).send().await.unwrap().text().await.unwrap();
            page.contains("Reset your Latchkey password")
        }
    })
    .await;
    assert!(listed, "the reset mail is listed at {mail_url}");
    let json: Value = client
        .get(format!("{}/messages.json", mail_url.trim_end_matches('/')))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(json[0]["to"][0], latchkey::demo::DEMO_ADMIN_EMAIL, "{json}");
    demo.stop().await.unwrap();
}
