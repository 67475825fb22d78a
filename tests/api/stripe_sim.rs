//! Our client against the Stripe simulator, end to end: checkout → pay with a test card →
//! a signed webhook lands in our inbox; catch-up when webhooks are off; idempotency keys.

use latchkey::integrations::stripe::{
    idempotency_key, CheckoutRequest, CheckoutTarget, StripeApiError, StripeClient,
};
use latchkey::sim::stripe::{DeliveryMode, StripeSimHandle};
use secrecy::SecretString;
use serde_json::Value;

use crate::helpers::{Backend, TestDatabase};
use crate::on_both_backends;
use crate::stripe_support::*;

fn client_for(sim: &StripeSimHandle, key: &str) -> StripeClient {
    StripeClient::new(
        &SecretString::from(key.to_string()),
        Some(&sim.url().parse().unwrap()),
        "http://localhost:3000".parse().unwrap(),
    )
    .unwrap()
}

fn door_checkout(payment_id: &str) -> CheckoutRequest {
    CheckoutRequest {
        payment_id: payment_id.to_string(),
        target: CheckoutTarget::Door {
            door_uid: "door-1".to_string(),
        },
        amount: 500,
        currency: "eur".to_string(),
        description: "Door 1, 60 minutes".to_string(),
        email: Some("guest@example.com".to_string()),
        success_path: "/access/token-1".to_string(),
        cancel_path: "/pay/door-1".to_string(),
        expires_at: None,
    }
}

/// The app (pointed at the simulator) and the simulator (delivering to the app).
async fn app_and_sim(database: &TestDatabase) -> (StripeApp, StripeSimHandle) {
    let sim = spawn_sim().await;
    let setup = Setup {
        api_base: Some(sim.url()),
        ..Setup::default()
    };
    let app = spawn_stripe_app(database, setup).await;
    sim.set_webhook_url(app.webhook_url());
    (app, sim)
}

async fn pay(app: &StripeApp, sim: &StripeSimHandle, session_id: &str, card: &str) -> Value {
    app.client
        .post(format!("{}/_sim/checkout/{session_id}/pay", sim.url()))
        .header("accept", "application/json")
        .form(&[("card", card)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn event_of_type(sim: &StripeSimHandle, kind: &str) -> Value {
    sim.events()
        .into_iter()
        .find(|e| e["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} event"))
}

async fn a_paid_checkout_delivers_signed_events_into_the_inbox(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (app, sim) = app_and_sim(&database).await;
    let client = app.stripe.client().expect("configured client");
    let payment_id = uuid::Uuid::new_v4().to_string();
    let created = client
        .create_door_checkout(&door_checkout(&payment_id))
        .await
        .unwrap();
    assert!(created.session_id.starts_with("cs_test_"));
    assert!(created.url.contains(&created.session_id));
    // The hosted page exists.
    let page = app.client.get(&created.url).send().await.unwrap();
    assert_eq!(page.status(), 200);

    let paid = pay(&app, &sim, &created.session_id, "4242424242424242").await;
    assert_eq!(paid["status"], "succeeded");
    let succeeded = event_of_type(&sim, "payment_intent.succeeded").await;
    let completed = event_of_type(&sim, "checkout.session.completed").await;
    for event in [&succeeded, &completed] {
        let id = event["id"].as_str().unwrap().to_string();
        wait_for("the webhook to land", || async {
            app.delivery(&id).await.is_some()
        })
        .await;
    }
    // Our ids travelled on both objects.
    let stored = app
        .stripe
        .inbox
        .get(succeeded["id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    let event: Value = stored.json().unwrap();
    assert_eq!(
        event["data"]["object"]["metadata"]["latchkey_payment_id"],
        payment_id.as_str()
    );
    assert_eq!(event["data"]["object"]["metadata"]["latchkey_kind"], "door");
    assert_eq!(
        completed["data"]["object"]["metadata"]["latchkey_door_uid"],
        "door-1"
    );
    assert_eq!(completed["data"]["object"]["payment_status"], "paid");
    assert_eq!(
        completed["data"]["object"]["success_url"],
        "http://localhost:3000/access/token-1"
    );
    // Every delivery was accepted first time: correctly signed.
    assert!(sim.deliveries().iter().all(|d| d.status == Some(200)));
    sim.stop().await;
    app.stop().await;
}

async fn a_declined_card_delivers_payment_failed_with_the_reason(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (app, sim) = app_and_sim(&database).await;
    let client = app.stripe.client().unwrap();
    let created = client
        .create_door_checkout(&door_checkout(&uuid::Uuid::new_v4().to_string()))
        .await
        .unwrap();
    let declined = pay(&app, &sim, &created.session_id, "4000000000000002").await;
    assert_eq!(declined["status"], "requires_payment_method");
    let failed = event_of_type(&sim, "payment_intent.payment_failed").await;
    let id = failed["id"].as_str().unwrap().to_string();
    wait_for("payment_failed to land", || async {
        app.delivery(&id).await.is_some()
    })
    .await;
    let stored: Value = app
        .stripe
        .inbox
        .get(&id)
        .await
        .unwrap()
        .unwrap()
        .json()
        .unwrap();
    let error = &stored["data"]["object"]["last_payment_error"];
    assert_eq!(error["code"], "card_declined");
    assert_eq!(error["decline_code"], "generic_decline");

    let created = client
        .create_door_checkout(&door_checkout(&uuid::Uuid::new_v4().to_string()))
        .await
        .unwrap();
    let poor = pay(&app, &sim, &created.session_id, "4000000000009995").await;
    assert_eq!(
        poor["last_payment_error"]["decline_code"],
        "insufficient_funds"
    );
    sim.stop().await;
    app.stop().await;
}

async fn catch_up_recovers_events_that_were_never_delivered(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (app, sim) = app_and_sim(&database).await;
    sim.set_delivery(DeliveryMode::Off);
    let client = app.stripe.client().unwrap();
    let created = client
        .create_door_checkout(&door_checkout(&uuid::Uuid::new_v4().to_string()))
        .await
        .unwrap();
    pay(&app, &sim, &created.session_id, "4242424242424242").await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(sim.deliveries().is_empty());
    assert!(app.deliveries().await.is_empty());

    let response = app
        .client
        .post(format!("{}/api/stripe/catch-up", app.address))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let report: Value = response.json().await.unwrap();
    // checkout.session.completed and payment_intent.succeeded; charge.succeeded is not a
    // type Latchkey uses, so it is not listed.
    assert_eq!(report["inserted"], 2, "{report}");
    let items = app.deliveries().await;
    let mut ids: Vec<&str> = items
        .iter()
        .map(|i| i["event_id"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut expected: Vec<String> = sim
        .events()
        .iter()
        .filter(|e| {
            latchkey::stripe_events::USED_EVENT_TYPES.contains(&e["type"].as_str().unwrap())
        })
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    expected.sort();
    assert_eq!(ids, expected);
    assert!(items.iter().all(|i| i["source"] == "catch_up"));
    let listed = sim
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1/events")
        .unwrap();
    let query = listed.query.unwrap_or_default();
    assert!(
        query.contains("created%5Bgt%5D=") || query.contains("created[gt]="),
        "{query}"
    );

    // A second run finds nothing new; a late webhook of a caught-up event is a duplicate.
    let again: Value = app
        .client
        .post(format!("{}/api/stripe/catch-up", app.address))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["inserted"], 0);
    sim.set_delivery(DeliveryMode::Normal);
    assert!(sim.redeliver(&expected[0]).await);
    assert_eq!(app.deliveries().await.len(), 2);
    sim.stop().await;
    app.stop().await;
}

async fn every_post_carries_an_idempotency_key_and_retries_return_the_same_object(
    backend: Backend,
) {
    let database = TestDatabase::create(backend).await;
    let (app, sim) = app_and_sim(&database).await;
    let client = app.stripe.client().unwrap();
    let payment_id = uuid::Uuid::new_v4().to_string();
    let mut request = door_checkout(&payment_id);
    request.target = CheckoutTarget::Device {
        device_uid: "washer-1".into(),
        plan_id: "plan-30".into(),
    };
    let first = client.create_device_checkout(&request).await.unwrap();
    let again = client.create_device_checkout(&request).await.unwrap();
    assert_eq!(first, again, "a retried create returns the same session");
    let intent = first.payment_intent.clone().unwrap();

    // Same key, other parameters: Stripe's idempotency_error, typed.
    let mut changed = request.clone();
    changed.amount = 900;
    match client.create_device_checkout(&changed).await {
        Err(StripeApiError::Stripe { status, kind, .. }) => {
            assert_eq!(status, 400);
            assert_eq!(kind, "idempotency_error");
        }
        other => panic!("expected an idempotency error, got {other:?}"),
    }

    // Manual capture: authorised, then captured, then refunded.
    pay(&app, &sim, &first.session_id, "4242424242424242").await;
    let authorised = client.retrieve_payment_intent(&intent).await.unwrap();
    assert_eq!(authorised.status, "requires_capture");
    assert_eq!(authorised.capture_method.as_deref(), Some("manual"));
    assert_eq!(authorised.metadata["latchkey_device_uid"], "washer-1");
    assert_eq!(authorised.metadata["latchkey_plan_id"], "plan-30");
    let capture_key = idempotency_key(&payment_id, "capture");
    let captured = client
        .capture(&intent, Some(400), &capture_key)
        .await
        .unwrap();
    assert_eq!(captured.status, "succeeded");
    assert_eq!(captured.amount_received, 400);
    let replay = client
        .capture(&intent, Some(400), &capture_key)
        .await
        .unwrap();
    assert_eq!(
        replay, captured,
        "a retried capture is replayed, not repeated"
    );
    let refund_key = idempotency_key(&payment_id, "refund-1");
    let refund = client
        .refund(&intent, Some(150), Default::default(), &refund_key)
        .await
        .unwrap();
    assert_eq!(refund.amount, 150);
    let over = client
        .refund(
            &intent,
            Some(1000),
            Default::default(),
            &idempotency_key(&payment_id, "refund-2"),
        )
        .await;
    assert!(matches!(
        over,
        Err(StripeApiError::Stripe { status: 400, .. })
    ));

    // A cancel of a captured intent is refused with Stripe's message (no panic).
    let cancel = client
        .cancel(&intent, &idempotency_key(&payment_id, "cancel"))
        .await;
    match cancel {
        Err(StripeApiError::Stripe { message, .. }) => assert!(message.contains("succeeded")),
        other => panic!("expected a Stripe error, got {other:?}"),
    }

    let posts: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert!(posts.len() >= 8);
    for post in &posts {
        let key = post
            .idempotency_key
            .as_deref()
            .unwrap_or_else(|| panic!("no key on {post:?}"));
        assert!(key.starts_with(&format!("latchkey:{payment_id}:")), "{key}");
        assert!(post.stripe_version.is_some());
    }
    assert!(posts[1].replayed, "the second create was a replay");
    assert!(
        posts[0]
            .body
            .contains("payment_intent_data%5Bmetadata%5D%5Blatchkey_payment_id%5D")
            || posts[0]
                .body
                .contains("payment_intent_data[metadata][latchkey_payment_id]"),
        "{}",
        posts[0].body
    );
    sim.stop().await;
    app.stop().await;
}

async fn a_wrong_api_key_is_a_typed_stripe_error(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (app, sim) = app_and_sim(&database).await;
    let client = client_for(&sim, "sk_test_wrong");
    match client.retrieve_payment_intent("pi_123").await {
        Err(StripeApiError::Stripe {
            status, message, ..
        }) => {
            assert_eq!(status, 401);
            assert!(message.contains("Invalid API Key"));
        }
        other => panic!("expected 401, got {other:?}"),
    }
    let diagnostics: Value = app
        .get_authorized("/api/stripe/diagnostics?test=true")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(diagnostics["secret_key"]["present"], true);
    assert_eq!(diagnostics["secret_key"]["mode"], "test");
    assert_eq!(diagnostics["webhook_secrets"], 1);
    assert_eq!(diagnostics["connection"]["ok"], true, "{diagnostics}");
    assert!(!diagnostics.to_string().contains(API_KEY), "never the key");
    sim.stop().await;
    app.stop().await;
}

async fn duplicated_and_reordered_simulator_deliveries_converge_in_the_inbox(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (app, sim) = app_and_sim(&database).await;
    sim.set_delivery(DeliveryMode::Duplicate { copies: 3 });
    let client = app.stripe.client().unwrap();
    let created = client
        .create_door_checkout(&door_checkout(&uuid::Uuid::new_v4().to_string()))
        .await
        .unwrap();
    pay(&app, &sim, &created.session_id, "4242424242424242").await;
    wait_for("nine deliveries", || async { sim.deliveries().len() >= 9 }).await;
    let items = app.deliveries().await;
    assert_eq!(items.len(), 3);
    assert!(items.iter().all(|i| i["duplicates"] == 2));
    sim.set_delivery(DeliveryMode::Reverse);
    let created = client
        .create_door_checkout(&door_checkout(&uuid::Uuid::new_v4().to_string()))
        .await
        .unwrap();
    pay(&app, &sim, &created.session_id, "4242424242424242").await;
    wait_for("three more rows", || async {
        app.deliveries().await.len() == 6
    })
    .await;
    sim.stop().await;
    app.stop().await;
}

/// The background job (start-up, then every interval) recovers undelivered events and
/// the worker processes them, with no operator action.
async fn the_catch_up_job_runs_by_itself(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let sim = spawn_sim().await;
    sim.set_delivery(DeliveryMode::Off);
    let processor = CountingProcessor::failing_first(0);
    let setup = Setup {
        api_base: Some(sim.url()),
        processor: Some(processor.clone()),
        catch_up_interval: Some(std::time::Duration::from_millis(200)),
        ..Setup::default()
    };
    let app = spawn_stripe_app(&database, setup).await;
    let client = app.stripe.client().unwrap();
    let created = client
        .create_door_checkout(&door_checkout(&uuid::Uuid::new_v4().to_string()))
        .await
        .unwrap();
    pay(&app, &sim, &created.session_id, "4242424242424242").await;
    // Two of the three events are types Latchkey uses (charge.succeeded is not listed).
    wait_for("two caught-up events processed", || async {
        let items = app.deliveries().await;
        items.len() == 2 && items.iter().all(|i| i["status"] == "processed")
    })
    .await;
    let diagnostics: Value = app
        .get_authorized("/api/stripe/diagnostics")
        .await
        .json()
        .await
        .unwrap();
    assert!(diagnostics["catch_up"]["at"].is_string(), "{diagnostics}");
    assert_eq!(diagnostics["inbox"]["by_status"]["processed"], 2);
    sim.stop().await;
    app.stop().await;
}

/// 500s and 429s are retried with the same idempotency key; a longer outage surfaces as
/// a typed error carrying Stripe's message.
async fn transient_stripe_failures_are_retried_with_the_same_key(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (app, sim) = app_and_sim(&database).await;
    let client = app.stripe.client().unwrap();
    let payment_id = uuid::Uuid::new_v4().to_string();
    sim.fail_next(2, 500);
    let created = client
        .create_door_checkout(&door_checkout(&payment_id))
        .await
        .unwrap();
    let posts: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(posts.len(), 3);
    assert_eq!(posts[0].status, 500);
    assert_eq!(posts[2].status, 200);
    let key = idempotency_key(&payment_id, "checkout");
    assert!(posts
        .iter()
        .all(|p| p.idempotency_key.as_deref() == Some(key.as_str())));
    assert!(created.session_id.starts_with("cs_test_"));

    sim.fail_next(3, 429);
    match client
        .create_door_checkout(&door_checkout(&uuid::Uuid::new_v4().to_string()))
        .await
    {
        Err(StripeApiError::Stripe {
            status, message, ..
        }) => {
            assert_eq!(status, 429);
            assert!(message.contains("Simulated"));
        }
        other => panic!("expected a 429 after three attempts, got {other:?}"),
    }
    sim.stop().await;
    app.stop().await;
}

/// The hosted page a guest sees: a form whose card decides, then the redirect back to us.
async fn the_checkout_page_pays_and_redirects_to_the_success_url(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (app, sim) = app_and_sim(&database).await;
    let client = app.stripe.client().unwrap();
    let created = client
        .create_door_checkout(&door_checkout(&uuid::Uuid::new_v4().to_string()))
        .await
        .unwrap();
    let page = app
        .client
        .get(&created.url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(&format!("/_sim/checkout/{}/pay", created.session_id)));
    assert!(page.contains("5.00 EUR"));
    let response = app
        .client
        .post(format!(
            "{}/_sim/checkout/{}/pay",
            sim.url(),
            created.session_id
        ))
        .form(&[
            ("card", "4242 4242 4242 4242"),
            ("email", "guest@example.com"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(
        response.headers()["location"],
        "http://localhost:3000/access/token-1"
    );
    sim.stop().await;
    app.stop().await;
}

on_both_backends!(
    the_checkout_page_pays_and_redirects_to_the_success_url,
    transient_stripe_failures_are_retried_with_the_same_key,
    the_catch_up_job_runs_by_itself,
    a_paid_checkout_delivers_signed_events_into_the_inbox,
    a_declined_card_delivers_payment_failed_with_the_reason,
    catch_up_recovers_events_that_were_never_delivered,
    every_post_carries_an_idempotency_key_and_retries_return_the_same_object,
    a_wrong_api_key_is_a_typed_stripe_error,
    duplicated_and_reordered_simulator_deliveries_converge_in_the_inbox,
);

/// The inbox's event ids (and sources).
async fn inbox_rows(database: &TestDatabase) -> Vec<(String, String)> {
    let connection = database.connect().await;
    latchkey::on_pool!(&connection, pool => {
        sqlx::query_as("SELECT event_id, source FROM stripe_inbox ORDER BY event_id")
            .fetch_all(pool)
            .await
            .unwrap()
    })
}

/// 250 events whose webhooks were lost, the oldest two days old, while newer deliveries
/// arrived meanwhile: the first run is stopped half-way by Stripe failing, the second
/// resumes at the cursor (no listing from the start again), and every lost event of a
/// type Latchkey uses reaches the inbox once.
async fn catch_up_walks_every_lost_event_and_resumes_after_a_stop(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (app, sim) = app_and_sim(&database).await;
    sim.set_delivery(DeliveryMode::Off);
    let client = app.stripe.client().unwrap();
    // Each paid door checkout makes two events Latchkey uses (and a charge.succeeded).
    for _ in 0..125 {
        let created = client
            .create_door_checkout(&door_checkout(&uuid::Uuid::new_v4().to_string()))
            .await
            .unwrap();
        sim.pay(&created.session_id, "4242424242424242").unwrap();
    }
    sim.backdate_events(2 * 24 * 60 * 60);
    sim.set_delivery(DeliveryMode::Normal);
    let newer = client
        .create_door_checkout(&door_checkout(&uuid::Uuid::new_v4().to_string()))
        .await
        .unwrap();
    sim.pay(&newer.session_id, "4242424242424242").unwrap();
    wait_for("the newer webhooks", || async {
        inbox_rows(&database).await.len() == 3
    })
    .await;

    // Three requests find the oldest event (252 listed newest first, 100 a page), the
    // fourth brings the 100 after it; then Stripe fails.
    sim.fail_event_lists_after(4, 100);
    assert!(
        app.stripe.catch_up_now().await.is_err(),
        "the first run stops"
    );
    let after_first = inbox_rows(&database).await.len();
    assert_eq!(
        after_first,
        3 + 101,
        "the oldest event and the page after it"
    );
    sim.fail_event_lists_after(0, 0);
    let requests_before = sim.requests().len();
    let report = app.stripe.catch_up_now().await.unwrap();
    assert_eq!(report.inserted, 250 - 101, "{report:?}");
    let resumed = sim.requests()[requests_before]
        .query
        .clone()
        .unwrap_or_default();
    assert!(
        resumed.contains("ending_before"),
        "the second run starts at the cursor: {resumed}"
    );

    let used: Vec<String> = sim
        .events()
        .iter()
        .filter(|e| {
            latchkey::stripe_events::USED_EVENT_TYPES.contains(&e["type"].as_str().unwrap())
        })
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(used.len(), 252);
    let stored: std::collections::HashSet<String> = inbox_rows(&database)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert!(
        used.iter().all(|id| stored.contains(id)),
        "every lost event is in the inbox"
    );
    assert_eq!(
        stored.len(),
        253,
        "once each, plus the delivered charge.succeeded"
    );
    let again = app.stripe.catch_up_now().await.unwrap();
    assert_eq!(again.inserted, 0);
    sim.stop().await;
    app.stop().await;
}

on_both_backends!(catch_up_walks_every_lost_event_and_resumes_after_a_stop);
