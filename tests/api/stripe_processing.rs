//! Processing stored deliveries: inline attempt, retries by the worker, giving up
//! visibly, ignoring.

use std::sync::Arc;

use crate::helpers::{Backend, TestDatabase};
use crate::on_both_backends;
use crate::stripe_support::*;

async fn a_failing_delivery_is_retried_by_the_worker_until_processed(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let processor = CountingProcessor::failing_first(2);
    let setup = Setup {
        processor: Some(processor.clone()),
        ..Setup::default()
    };
    let app = spawn_stripe_app(&database, setup).await;
    let id = unique_event_id();
    assert_eq!(
        app.post_signed(&event(&id, "payment_intent.succeeded"))
            .await
            .status(),
        200,
        "the 2xx does not depend on processing"
    );
    wait_for("the first failure to be recorded", || async {
        app.delivery(&id)
            .await
            .is_some_and(|d| d["status"] == "failed")
    })
    .await;
    let failed = app.delivery(&id).await.unwrap();
    assert!(failed["attempts"].as_i64().unwrap() >= 1);
    assert!(failed["last_error"]
        .as_str()
        .unwrap()
        .starts_with("injected failure"));
    wait_for("the worker to process it", || async {
        app.delivery(&id)
            .await
            .is_some_and(|d| d["status"] == "processed")
    })
    .await;
    let done = app.delivery(&id).await.unwrap();
    assert_eq!(done["attempts"], 3);
    assert_eq!(processor.calls_for(&id), 3);
    app.stop().await;
}

async fn a_delivery_out_of_attempts_stays_failed_and_visible(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let processor = Arc::new(CountingProcessor {
        always_fail: true,
        ..Default::default()
    });
    let mut worker = fast_worker();
    worker.max_attempts = 2;
    let setup = Setup {
        processor: Some(processor.clone()),
        worker,
        ..Setup::default()
    };
    let app = spawn_stripe_app(&database, setup).await;
    let id = unique_event_id();
    app.post_signed(&event(&id, "payment_intent.succeeded"))
        .await;
    wait_for("two attempts", || async {
        app.delivery(&id).await.is_some_and(|d| d["attempts"] == 2)
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let row = app.delivery(&id).await.unwrap();
    assert_eq!(row["status"], "failed");
    assert_eq!(row["attempts"], 2, "no attempt after the last one");
    assert_eq!(row["last_error"], "injected failure 2");
    let failed = app
        .get_authorized("/api/stripe/deliveries?status=failed")
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(failed["items"].as_array().unwrap().len(), 1);
    app.stop().await;
}

async fn an_event_the_processor_ignores_is_marked_with_the_reason(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let processor = CountingProcessor::failing_first(0);
    let setup = Setup {
        processor: Some(processor),
        ..Setup::default()
    };
    let app = spawn_stripe_app(&database, setup).await;
    let id = unique_event_id();
    app.post_signed(&event(&id, "customer.ignored")).await;
    wait_for("ignored", || async {
        app.delivery(&id)
            .await
            .is_some_and(|d| d["status"] == "ignored")
    })
    .await;
    let row = app.delivery(&id).await.unwrap();
    assert_eq!(row["ignore_reason"], "not an event the ledger consumes");
    app.stop().await;
}

on_both_backends!(
    a_failing_delivery_is_retried_by_the_worker_until_processed,
    a_delivery_out_of_attempts_stays_failed_and_visible,
    an_event_the_processor_ignores_is_marked_with_the_reason,
);

/// Two instances on one PostgreSQL, workers only (no inline processing): every claim is
/// exclusive (`FOR UPDATE SKIP LOCKED`), so each event is processed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_on_one_postgres_never_process_an_event_twice() {
    let database = TestDatabase::create(Backend::Postgres).await;
    let processor = CountingProcessor::failing_first(0);
    let setup = Setup {
        processor: Some(processor.clone()),
        process_inline: false,
        ..Setup::default()
    };
    let first = spawn_stripe_app(&database, setup.clone()).await;
    let second = spawn_stripe_app(&database, setup).await;
    let ids: Vec<String> = (0..40).map(|_| unique_event_id()).collect();
    for (i, id) in ids.iter().enumerate() {
        let target = if i % 2 == 0 { &first } else { &second };
        assert_eq!(
            target
                .post_signed(&event(id, "payment_intent.succeeded"))
                .await
                .status(),
            200
        );
    }
    wait_for("all processed", || async {
        first
            .deliveries()
            .await
            .iter()
            .filter(|d| d["status"] == "processed")
            .count()
            == ids.len()
    })
    .await;
    for id in &ids {
        assert_eq!(processor.calls_for(id), 1, "{id}");
    }
    second.stop().await;
    first.stop().await;
}
