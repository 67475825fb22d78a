//! `POST /api/stripe/webhook`: signatures, the durable inbox, duplicates, and the
//! operator views of it.

use latchkey::integrations::stripe::signature;
use serde_json::Value;

use crate::helpers::{Backend, TestDatabase};
use crate::on_both_backends;
use crate::stripe_support::*;

async fn a_signed_delivery_is_stored_and_listed(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let app = spawn_stripe_app(&database, Setup::default()).await;
    let id = unique_event_id();
    let response = app
        .post_signed(&event(&id, "payment_intent.succeeded"))
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["duplicate"], false);

    let response = app.get_authorized("/api/stripe/deliveries").await;
    assert_eq!(response.status(), 200);
    let page: Value = response.json().await.unwrap();
    assert!(page.get("next_cursor").is_some());
    let item = &page["items"][0];
    assert_eq!(item["event_id"], id.as_str());
    assert_eq!(item["type"], "payment_intent.succeeded");
    // Stored, then (maybe already) looked at by the payments processor, which finds no
    // payment of ours behind this made-up event and ignores it.
    assert!(
        matches!(item["status"].as_str(), Some("received" | "ignored")),
        "{item}"
    );
    assert!(item["last_error"].is_null());
    assert!(item["received_at"].is_string());
    app.stop().await;
}

async fn forged_and_stale_deliveries_are_refused_and_not_stored(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let app = spawn_stripe_app(&database, Setup::default()).await;
    let body = event(&unique_event_id(), "payment_intent.succeeded");
    let good = signature::header(body.as_bytes(), &[SECRET], now());
    let tampered = body.replace("500", "999");
    let cases: Vec<(&str, String, Option<String>)> = vec![
        ("tampered body", tampered, Some(good.clone())),
        (
            "wrong secret",
            body.clone(),
            Some(signature::header(body.as_bytes(), &["whsec_wrong"], now())),
        ),
        ("missing header", body.clone(), None),
        (
            "malformed header",
            body.clone(),
            Some("v1=nothex,t=soon".to_string()),
        ),
        (
            "301 s old",
            body.clone(),
            Some(signature::header(body.as_bytes(), &[SECRET], now() - 301)),
        ),
        (
            "far future",
            body.clone(),
            Some(signature::header(body.as_bytes(), &[SECRET], now() + 3600)),
        ),
    ];
    for (name, payload, header) in &cases {
        let response = app.post_webhook(payload, header.as_deref()).await;
        assert_eq!(response.status(), 401, "{name}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "unauthenticated", "{name}");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("signature"),
            "{name}: {error}"
        );
    }
    assert!(app.deliveries().await.is_empty(), "nothing is stored");
    let total: f64 = [
        "mismatch",
        "missing_header",
        "malformed_header",
        "too_old",
        "in_future",
    ]
    .iter()
    .filter_map(|reason| {
        app.metrics.value(
            "latchkey_webhook_signature_failures_total",
            &[("reason", reason)],
        )
    })
    .sum();
    assert_eq!(total, 6.0);
    let diagnostics: Value = app
        .get_authorized("/api/stripe/diagnostics")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(diagnostics["inbox"]["signature_failures"], 6);
    let recorded = diagnostics["recent_signature_failures"].as_array().unwrap();
    assert_eq!(recorded.len(), 6);
    // Length and a short prefix only, never the body.
    assert!(recorded
        .iter()
        .all(|r| r["body_prefix_hex"].as_str().is_none_or(|p| p.len() <= 128)));
    app.stop().await;
}

async fn a_rotated_secret_is_accepted(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let setup = Setup {
        webhook_secrets: vec![SECRET, OLD_SECRET],
        ..Setup::default()
    };
    let app = spawn_stripe_app(&database, setup).await;
    let body = event(&unique_event_id(), "charge.refunded");
    let old_only = signature::header(body.as_bytes(), &[OLD_SECRET], now());
    assert_eq!(app.post_webhook(&body, Some(&old_only)).await.status(), 200);
    // During a roll Stripe signs with both; a header with an unknown and a known v1 passes.
    let body = event(&unique_event_id(), "charge.refunded");
    let both = signature::header(body.as_bytes(), &["whsec_unknown", SECRET], now());
    assert_eq!(app.post_webhook(&body, Some(&both)).await.status(), 200);
    assert_eq!(app.deliveries().await.len(), 2);
    app.stop().await;
}

async fn without_a_webhook_secret_the_endpoint_is_not_configured(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let setup = Setup {
        webhook_secrets: vec![],
        ..Setup::default()
    };
    let app = spawn_stripe_app(&database, setup).await;
    let response = app.post_signed(&event(&unique_event_id(), "x.y")).await;
    assert_eq!(response.status(), 503);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "not_configured");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("STRIPE_WEBHOOK_SECRET"));
    app.stop().await;
}

async fn a_signed_body_that_is_not_an_event_is_a_bad_request(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let app = spawn_stripe_app(&database, Setup::default()).await;
    let response = app.post_signed("{not json").await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "bad_request");
    assert!(app.deliveries().await.is_empty());
    app.stop().await;
}

/// 5 sequential copies to one instance, then 5 concurrent copies across two instances
/// on one database (one instance on SQLite, whose file belongs to one process).
async fn the_same_event_ten_times_is_stored_and_processed_once(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let processor = CountingProcessor::failing_first(0);
    let setup = Setup {
        processor: Some(processor.clone()),
        ..Setup::default()
    };
    let first = spawn_stripe_app(&database, setup.clone()).await;
    let second = match backend {
        Backend::Postgres => Some(spawn_stripe_app(&database, setup).await),
        Backend::Sqlite => None,
    };
    let id = unique_event_id();
    let body = event(&id, "payment_intent.succeeded");
    for _ in 0..5 {
        assert_eq!(first.post_signed(&body).await.status(), 200);
    }
    let sends = (0..5).map(|i| {
        let target = match (&second, i % 2) {
            (Some(second), 1) => second,
            _ => &first,
        };
        target.post_signed(&body)
    });
    for response in futures::future::join_all(sends).await {
        assert_eq!(response.status(), 200);
    }
    wait_for("the delivery to be processed", || async {
        first
            .delivery(&id)
            .await
            .is_some_and(|d| d["status"] == "processed")
    })
    .await;
    // Give a stray second processing (worker, other instance) the time to show up.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let items = first.deliveries().await;
    assert_eq!(items.len(), 1, "one row per event id");
    assert_eq!(items[0]["duplicates"], 9);
    assert_eq!(items[0]["attempts"], 1);
    assert_eq!(items[0]["payment_id"], "p-1");
    assert_eq!(processor.calls_for(&id), 1, "processed exactly once");
    if let Some(second) = second {
        second.stop().await;
    }
    first.stop().await;
}

async fn operator_routes_need_the_token(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let app = spawn_stripe_app(&database, Setup::default()).await;
    let url = format!("{}/api/stripe/deliveries", app.address);
    assert_eq!(app.client.get(&url).send().await.unwrap().status(), 401);
    let wrong = app
        .client
        .get(&url)
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = app
        .client
        .get(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    app.stop().await;
    let setup = Setup {
        api_token: None,
        ..Setup::default()
    };
    let database = TestDatabase::create(backend).await;
    let app = spawn_stripe_app(&database, setup).await;
    // Without a bootstrap token, only tokens issued with `latchkey token create` work.
    let response = app.get_authorized("/api/stripe/diagnostics").await;
    assert_eq!(response.status(), 401);
    app.stop().await;
}

on_both_backends!(
    a_signed_delivery_is_stored_and_listed,
    forged_and_stale_deliveries_are_refused_and_not_stored,
    a_rotated_secret_is_accepted,
    without_a_webhook_secret_the_endpoint_is_not_configured,
    a_signed_body_that_is_not_an_event_is_a_bad_request,
    the_same_event_ten_times_is_stored_and_processed_once,
    operator_routes_need_the_token,
);

/// Never 2xx without durable storage: with the database gone the delivery fails, so
/// Stripe keeps it and retries.
async fn no_2xx_when_the_delivery_cannot_be_stored(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let app = spawn_stripe_app(&database, Setup::default()).await;
    match backend {
        Backend::Postgres => database.drop_postgres().await,
        Backend::Sqlite => app.stripe.inbox.database().close().await,
    }
    let response = app
        .post_signed(&event(&unique_event_id(), "payment_intent.succeeded"))
        .await;
    assert!(response.status().is_server_error(), "{}", response.status());
    app.stop().await;
}

on_both_backends!(no_2xx_when_the_delivery_cannot_be_stored);

/// Group commit: 50 concurrent deliveries, one of them sent three times, are written in a
/// few shared batches; each is answered as if stored alone (one `New` per event id, the
/// repeats as duplicates of it) and each event id is one row.
async fn concurrent_deliveries_share_commits_and_stay_exactly_once(backend: Backend) {
    use latchkey::store::inbox::{Inbox, Inserted, NewDelivery, Source};
    let database = TestDatabase::create(backend).await;
    let inbox = Inbox::new(database.connect().await);
    let ids: Vec<String> = (0..48).map(|_| unique_event_id()).collect();
    let repeated = ids[7].clone();
    let mut sent: Vec<String> = ids.clone();
    sent.push(repeated.clone());
    sent.push(repeated.clone());
    let stores = sent.iter().map(|id| {
        let inbox = inbox.clone();
        let id = id.clone();
        async move {
            let payload = event(&id, "payment_intent.succeeded");
            let delivery = NewDelivery {
                event_id: &id,
                event_type: "payment_intent.succeeded",
                api_version: None,
                livemode: false,
                stripe_created: 1_700_000_000,
                payload: &payload,
                source: Source::Webhook,
            };
            (id.clone(), inbox.store(&delivery, 0).await.unwrap())
        }
    });
    let outcomes = futures::future::join_all(stores).await;
    for id in &ids {
        let fresh = outcomes
            .iter()
            .filter(|(stored, inserted)| stored == id && *inserted == Inserted::New)
            .count();
        assert_eq!(fresh, 1, "{id} is new exactly once");
    }
    let repeats = outcomes
        .iter()
        .filter(|(stored, inserted)| stored == &repeated && *inserted != Inserted::New)
        .count();
    assert_eq!(repeats, 2, "the two repeats are duplicates");
    let row = inbox.row(&repeated).await.unwrap().unwrap();
    assert_eq!(row.duplicates, 2);
    assert_eq!(inbox.list(200, None, None).await.unwrap().len(), 48);
    let batches = inbox.group_batches().unwrap();
    assert!(
        (3..=25).contains(&batches),
        "50 deliveries in {batches} batches (the three copies of one id need three)"
    );
}

on_both_backends!(concurrent_deliveries_share_commits_and_stay_exactly_once);
