//! Captures that cannot be lost and holds always released (issue 13), end to end against
//! the Stripe and Shelly simulators: a capture Stripe answers late is retried and captured
//! once; a declined capture stops the device at once, is audited and shows on module
//! health; a queued session whose authorization was cancelled never gets the relay; every
//! path where a device payment will not be captured releases the hold exactly once, even
//! when Stripe fails the first attempts.

use latchkey_aggregates::payment::PaymentStatus;
use latchkey_aggregates::session::SessionState;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::device_sessions::{
    count_events, device_is_free, pay, payment_status, session, session_state, wait_for,
    world_with, World,
};
use crate::helpers::{Backend, TestApp, ADMIN_TOKEN};
use crate::on_both_backends;
use crate::sim_helpers::PLUG;
use crate::stripe_support::API_KEY;

/// Every request the Stripe simulator received for `operation` (`capture`, `cancel`) of
/// `payment`'s PaymentIntent: (status, replayed).
async fn stripe_calls(world: &World, payment_id: Uuid, operation: &str) -> Vec<(u16, bool)> {
    let intent = payment_intent(&world.app, payment_id).await;
    let path = format!("/v1/payment_intents/{intent}/{operation}");
    world
        .sims
        .stripe
        .requests()
        .iter()
        .filter(|request| request.path == path)
        .map(|request| (request.status, request.replayed))
        .collect()
}

/// How many times Stripe did `operation` (answered 200, not a replay).
async fn done_at_stripe(world: &World, payment_id: Uuid, operation: &str) -> usize {
    stripe_calls(world, payment_id, operation)
        .await
        .iter()
        .filter(|(status, replayed)| *status == 200 && !replayed)
        .count()
}

async fn payment_intent(app: &TestApp, payment_id: Uuid) -> String {
    let (payment, _) = app
        .state
        .buses
        .payments
        .load(&payment_id.to_string())
        .await
        .unwrap();
    payment
        .payment_intent_id()
        .expect("the Checkout Session names its PaymentIntent")
        .to_string()
}

/// Starts a checkout on `device`; returns the payment, its Checkout Session and the
/// guest's status token.
async fn checkout_on(app: &TestApp, device: &str) -> (Uuid, String, String) {
    let response = app
        .post_json(
            &format!("/api/checkout/device/{device}"),
            None,
            &json!({"plan_id": "p30", "email": "guest@example.com"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    let payment_id: Uuid = body["payment_id"].as_str().unwrap().parse().unwrap();
    let token = body["status_url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let (payment, _) = app
        .state
        .buses
        .payments
        .load(&payment_id.to_string())
        .await
        .unwrap();
    let checkout_session = payment.checkout_session_id().unwrap().to_string();
    (payment_id, checkout_session, token)
}

async fn guest_view(app: &TestApp, token: &str) -> Value {
    let response = app.get(&format!("/api/session/{token}")).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Waits until the scheduler has no job left (captures, releases, and the authorization
/// deadline, dropped once the payment is settled).
async fn jobs_done(world: &World) -> bool {
    wait_for(|| async {
        latchkey::workflows::schedule::pending(&world.app.database)
            .await
            .unwrap()
            == 0
    })
    .await
}

async fn a_capture_stripe_fails_retryably_is_retried_and_captured_once(backend: Backend) {
    let world = world_with(backend, |_| {}).await;
    let (payment_id, checkout_session, _) = checkout_on(&world.app, "washer").await;
    // More failures than the client's own quick retries (3 attempts): the capture job
    // itself must come back later.
    world.sims.stripe.fail_next(4, 500);
    world
        .sims
        .stripe
        .pay(&checkout_session, "4242424242424242")
        .unwrap();
    assert!(
        wait_for(|| async { payment_status(&world, payment_id).await == PaymentStatus::Succeeded })
            .await,
        "captured after the failures; the payment is {:?}",
        payment_status(&world, payment_id).await
    );
    let calls = stripe_calls(&world, payment_id, "capture").await;
    assert!(
        calls.len() > 3 && calls.iter().filter(|(status, _)| *status == 500).count() == 4,
        "the job retried after the client gave up: {calls:?}"
    );
    assert_eq!(
        done_at_stripe(&world, payment_id, "capture").await,
        1,
        "captured once: {calls:?}"
    );
    assert!(jobs_done(&world).await);
    assert_eq!(
        count_events(&world.app, "Payment", payment_id, "PaymentCaptureRequested").await,
        1
    );
    assert_eq!(
        count_events(&world.app, "Payment", payment_id, "PaymentCaptureFailed").await,
        0
    );
    assert_eq!(
        session_state(&world, payment_id).await,
        Some(SessionState::Active),
        "the session keeps running"
    );
    assert_eq!(
        done_at_stripe(&world, payment_id, "cancel").await,
        0,
        "nothing released"
    );
    world.app.stop().await;
}

async fn a_declined_capture_stops_the_device_is_audited_and_shows_on_health(backend: Backend) {
    let world = world_with(backend, |_| {}).await;
    let (payment_id, checkout_session, token) = checkout_on(&world.app, "washer").await;
    let intent = payment_intent(&world.app, payment_id).await;
    world.sims.stripe.decline_next_capture(&intent).unwrap();
    world
        .sims
        .stripe
        .pay(&checkout_session, "4242424242424242")
        .unwrap();
    assert!(
        wait_for(|| async {
            session_state(&world, payment_id).await == Some(SessionState::ForceEnded)
        })
        .await,
        "the session is ended at once; it is {:?}",
        session_state(&world, payment_id).await
    );
    let ended = session(&world.app, payment_id).await;
    assert!(
        ended.started_at().is_some(),
        "it had started: the relay was ON"
    );
    assert!(
        ended
            .end_reason()
            .is_some_and(|reason| reason.contains("could not be charged")),
        "the reason is recorded: {:?}",
        ended.end_reason()
    );
    assert!(
        wait_for(|| async { !world.sims.relay_is_on() }).await,
        "the relay is switched OFF"
    );
    assert!(wait_for(|| async { device_is_free(&world).await }).await);
    assert!(
        wait_for(|| async { payment_status(&world, payment_id).await == PaymentStatus::Cancelled })
            .await,
        "the hold left by the declined capture is released"
    );
    assert_eq!(done_at_stripe(&world, payment_id, "capture").await, 0);
    assert_eq!(done_at_stripe(&world, payment_id, "cancel").await, 1);

    let audit = wait_for(|| async {
        let response = world
            .app
            .get_with_token("/api/audit?action=capture_failed", ADMIN_TOKEN)
            .await;
        let body: Value = response.json().await.unwrap();
        body["items"].as_array().is_some_and(|items| {
            items.len() == 1 && items[0]["aggregate_id"] == payment_id.to_string()
        })
    })
    .await;
    assert!(
        audit,
        "the audit log has one capture_failed for the payment"
    );
    let health: Value = world
        .app
        .get_with_token("/api/health/modules", ADMIN_TOKEN)
        .await
        .json()
        .await
        .unwrap();
    let failures = &health["payment_failures"];
    assert_eq!(failures["capture_failed"], 1, "{health}");
    assert_eq!(failures["latest"][0]["payment_id"], payment_id.to_string());
    assert!(failures["latest"][0]["reason"]
        .as_str()
        .is_some_and(|reason| reason.contains("declined")));

    let view = guest_view(&world.app, &token).await;
    assert_eq!(view["state"], "charge_failed", "{view}");
    assert!(view["message"]
        .as_str()
        .unwrap()
        .contains("could not be charged"));
    world.app.stop().await;
}

on_both_backends!(
    a_capture_stripe_fails_retryably_is_retried_and_captured_once,
    a_declined_capture_stops_the_device_is_audited_and_shows_on_health,
);

/// When the authorization deadline job of `payment_id` is due, if one is scheduled.
async fn deadline_due_ms(world: &World, payment_id: Uuid) -> Option<i64> {
    let key = latchkey::workflows::captures::deadline_job_key(payment_id);
    latchkey::on_pool!(&world.app.database, pool => {
        sqlx::query_scalar("SELECT due_at_ms FROM scheduled_jobs WHERE job_key = $1")
            .bind(&key)
            .fetch_optional(pool)
            .await
    })
    .unwrap()
}

/// Cancels a PaymentIntent at Stripe as the Dashboard would (not through Latchkey).
async fn cancel_at_stripe(world: &World, intent: &str) {
    let response = reqwest::Client::new()
        .post(format!(
            "{}/v1/payment_intents/{intent}/cancel",
            world.sims.stripe.url()
        ))
        .bearer_auth(API_KEY)
        .form(&[("cancellation_reason", "requested_by_customer")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

async fn a_queued_session_whose_authorization_was_cancelled_never_gets_the_relay(backend: Backend) {
    let world = world_with(backend, |_| {}).await;
    let first = pay(&world).await;
    assert!(
        wait_for(|| async { session_state(&world, first).await == Some(SessionState::Active) })
            .await
    );
    let second = pay(&world).await;
    assert!(
        wait_for(|| async { session_state(&world, second).await == Some(SessionState::Queued) })
            .await
    );
    // Held while it waits: settled before Stripe's 7-day limit if it waits that long.
    let (payment, _) = world
        .app
        .state
        .buses
        .payments
        .load(&second.to_string())
        .await
        .unwrap();
    let deadline = latchkey::workflows::captures::deadline_of(payment.started_at().unwrap());
    assert!(
        wait_for(|| async {
            deadline_due_ms(&world, second).await == Some(deadline.timestamp_millis())
        })
        .await,
        "the authorization deadline is scheduled 6.5 days after checkout"
    );
    let intent = payment_intent(&world.app, second).await;
    cancel_at_stripe(&world, &intent).await;
    assert!(
        wait_for(|| async { payment_status(&world, second).await == PaymentStatus::Cancelled })
            .await
    );
    assert!(
        wait_for(|| async { session_state(&world, second).await == Some(SessionState::Cancelled) })
            .await,
        "the queued session gives up its place"
    );
    let ends_at = session(&world.app, first).await.ends_at().unwrap();
    world.sims.advance_to(ends_at);
    assert!(
        wait_for(|| async {
            session_state(&world, first).await == Some(SessionState::Completed)
                && device_is_free(&world).await
        })
        .await
    );
    let switches: Vec<bool> = world
        .sims
        .relay_log()
        .iter()
        .map(|entry| entry.on)
        .collect();
    assert_eq!(
        switches,
        vec![true, false],
        "never ON for the cancelled one"
    );
    assert_eq!(done_at_stripe(&world, second, "capture").await, 0);
    assert!(
        wait_for(|| async { deadline_due_ms(&world, second).await.is_none() }).await,
        "a cancelled authorization needs no deadline"
    );
    assert_eq!(
        stripe_calls(&world, second, "cancel").await.len(),
        1,
        "only the Dashboard's cancel: Latchkey releases nothing twice"
    );
    world.app.stop().await;
}

on_both_backends!(a_queued_session_whose_authorization_was_cancelled_never_gets_the_relay);

/// Waits until `payment` is released at Stripe (`PaymentCancelled` recorded) and checks
/// it took exactly one cancel at Stripe and no capture.
async fn assert_released_once(world: &World, payment_id: Uuid) {
    assert!(
        wait_for(|| async { payment_status(world, payment_id).await == PaymentStatus::Cancelled })
            .await,
        "released; the payment is {:?}",
        payment_status(world, payment_id).await
    );
    assert!(jobs_done(world).await, "no job left");
    assert_eq!(
        stripe_calls(world, payment_id, "cancel").await,
        vec![(200, false)],
        "exactly one cancel at Stripe"
    );
    assert_eq!(stripe_calls(world, payment_id, "capture").await, vec![]);
}

async fn a_session_whose_relay_never_comes_on_releases_the_hold_once(backend: Backend) {
    let world = world_with(backend, |_| {}).await;
    world.sims.shelly.set_online(PLUG, false).unwrap();
    let (payment_id, checkout_session, token) = checkout_on(&world.app, "washer").await;
    world
        .sims
        .stripe
        .pay(&checkout_session, "4242424242424242")
        .unwrap();
    assert!(
        wait_for(|| async {
            session_state(&world, payment_id).await == Some(SessionState::Opened)
        })
        .await
    );
    // Stripe is down for the first two attempts of the release job (3 calls each).
    world.sims.stripe.fail_next(6, 503);
    world.sims.advance(chrono::Duration::minutes(2));
    assert!(
        wait_for(|| async {
            session_state(&world, payment_id).await == Some(SessionState::Cancelled)
        })
        .await
    );
    let view = guest_view(&world.app, &token).await;
    assert_eq!(view["state"], "not_charged");
    if payment_status(&world, payment_id).await == PaymentStatus::Authorized {
        assert!(
            view["message"].as_str().unwrap().contains("being released"),
            "not 'released' before Stripe confirmed it: {view}"
        );
    }
    assert!(
        wait_for(|| async { payment_status(&world, payment_id).await == PaymentStatus::Cancelled })
            .await
    );
    let calls = stripe_calls(&world, payment_id, "cancel").await;
    assert_eq!(
        calls.iter().filter(|(status, _)| *status == 503).count(),
        6,
        "{calls:?}"
    );
    assert_eq!(
        calls
            .iter()
            .filter(|(status, replayed)| *status == 200 && !replayed)
            .count(),
        1,
        "released once after the failures: {calls:?}"
    );
    let view = guest_view(&world.app, &token).await;
    assert!(
        view["message"]
            .as_str()
            .unwrap()
            .contains("has been released"),
        "{view}"
    );
    world.app.stop().await;
}

async fn a_session_the_relay_refuses_releases_the_hold_once(backend: Backend) {
    let world = world_with(backend, |_| {}).await;
    // A relay Shelly does not know: the ON is refused for good and the session fails.
    let dryer = json!({"uid": "dryer", "name": "Dryer", "location": "Lyon", "time_zone": "Europe/Paris",
                       "shelly_device_id": "shelly-unknown-0000", "shelly_channel": 0,
                       "plans": [{"plan_id": "p30", "name": "30 minutes", "minutes": 30, "price": 300, "currency": "eur"}]});
    assert_eq!(
        world
            .app
            .post_json("/api/devices", Some(ADMIN_TOKEN), &dryer)
            .await
            .status(),
        201
    );
    let (payment_id, checkout_session, _) = checkout_on(&world.app, "dryer").await;
    world
        .sims
        .stripe
        .pay(&checkout_session, "4242424242424242")
        .unwrap();
    assert!(
        wait_for(|| async {
            session_state(&world, payment_id).await == Some(SessionState::Failed)
        })
        .await,
        "the session fails; it is {:?}",
        session_state(&world, payment_id).await
    );
    assert_released_once(&world, payment_id).await;
    world.app.stop().await;
}

async fn force_end(world: &World, session_id: Uuid) {
    let response = world
        .app
        .post_json(
            &format!("/api/sessions/{session_id}/force-end"),
            Some(ADMIN_TOKEN),
            &json!({"reason": "the guest asked to leave"}),
        )
        .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

async fn force_ending_an_opened_or_a_queued_session_releases_each_hold_once(backend: Backend) {
    let world = world_with(backend, |_| {}).await;
    let first = pay(&world).await;
    assert!(
        wait_for(|| async { session_state(&world, first).await == Some(SessionState::Active) })
            .await
    );
    let queued = pay(&world).await;
    assert!(
        wait_for(|| async { session_state(&world, queued).await == Some(SessionState::Queued) })
            .await
    );
    force_end(&world, queued).await;
    assert_released_once(&world, queued).await;
    assert_eq!(
        session_state(&world, first).await,
        Some(SessionState::Active),
        "the running session is untouched"
    );

    // An opened session whose relay does not answer yet.
    force_end(&world, first).await;
    assert!(wait_for(|| async { device_is_free(&world).await }).await);
    world.sims.shelly.set_online(PLUG, false).unwrap();
    let opened = pay(&world).await;
    assert!(
        wait_for(|| async { session_state(&world, opened).await == Some(SessionState::Opened) })
            .await
    );
    force_end(&world, opened).await;
    assert_released_once(&world, opened).await;
    assert_eq!(
        done_at_stripe(&world, first, "cancel").await,
        0,
        "a session that ran is captured, not released"
    );
    world.app.stop().await;
}

async fn a_reservation_refused_for_maintenance_releases_the_hold_once(backend: Backend) {
    let world = world_with(backend, |_| {}).await;
    let (payment_id, checkout_session, token) = checkout_on(&world.app, "washer").await;
    let response = world
        .app
        .patch_json(
            "/api/devices/washer",
            Some(ADMIN_TOKEN),
            &json!({"status": "maintenance", "reason": "drum replaced"}),
        )
        .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    world
        .sims
        .stripe
        .pay(&checkout_session, "4242424242424242")
        .unwrap();
    assert_released_once(&world, payment_id).await;
    assert_eq!(session_state(&world, payment_id).await, None);
    assert!(!world.sims.relay_is_on());
    let view = guest_view(&world.app, &token).await;
    assert_eq!(view["state"], "not_charged", "{view}");
    assert!(
        view["message"]
            .as_str()
            .unwrap()
            .contains("has been released"),
        "{view}"
    );
    world.app.stop().await;
}

on_both_backends!(
    a_session_whose_relay_never_comes_on_releases_the_hold_once,
    a_session_the_relay_refuses_releases_the_hold_once,
    force_ending_an_opened_or_a_queued_session_releases_each_hold_once,
    a_reservation_refused_for_maintenance_releases_the_hold_once,
);
