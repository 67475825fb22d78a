//! `/health`, `/ready`, `/metrics` and start-up failures.

use std::process::Command;

use crate::helpers::{spawn_app, Backend};
use crate::on_both_backends;

async fn health_ready_and_metrics_answer(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_eq!(app.get("/health").await.status(), 200);
    assert_eq!(app.get("/ready").await.status(), 200);
    let metrics = app.metrics().await;
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(text.contains("latchkey_journal_events 0"), "{text}");
    assert!(
        text.contains(
            "latchkey_http_requests_total{method=\"GET\",route=\"/health\",status=\"200\"} 1"
        ),
        "{text}"
    );
    app.stop().await;
}

async fn ready_is_503_when_the_database_is_gone(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_eq!(app.get("/ready").await.status(), 200);
    match backend {
        Backend::Postgres => app.test_database.drop_postgres().await,
        // An embedded database cannot be taken away from under the process; closing the
        // pool is what SQLite being unavailable looks like to the server.
        Backend::Sqlite => app.database.close().await,
    }
    let response = app.get("/ready").await;
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "not_ready");
    assert_eq!(
        app.get("/health").await.status(),
        200,
        "liveness does not depend on the database"
    );
    app.stop().await;
}

on_both_backends!(
    health_ready_and_metrics_answer,
    ready_is_503_when_the_database_is_gone
);

#[test]
fn a_malformed_listen_address_stops_start_up_naming_the_variable() {
    let output = Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .arg("serve")
        .env("LATCHKEY_LISTEN", "not-an-address")
        .env("DATABASE_URL", "sqlite::memory:")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("LATCHKEY_LISTEN"), "{stderr}");
}

#[test]
fn an_unusable_database_url_stops_start_up_naming_the_variable() {
    let output = Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .arg("migrate")
        .env("DATABASE_URL", "mysql://nope")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("DATABASE_URL"));
}
