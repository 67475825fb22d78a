//! Operations endpoints: liveness, readiness and Prometheus metrics.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use secrecy::ExposeSecret;

use super::auth::constant_time_eq;
use super::{ApiError, AppState};

/// `/ready` answers within this even when the database hangs.
const READY_TIMEOUT: Duration = Duration::from_secs(3);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
}

/// The process is up and serving; says nothing about its dependencies.
async fn health() -> impl IntoResponse {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

/// Ready to take traffic: the database answers.
async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    match tokio::time::timeout(READY_TIMEOUT, state.database.ping()).await {
        Ok(Ok(())) => (
            StatusCode::OK,
            Json(json!({ "status": "ready", "database": "ok" })),
        ),
        Ok(Err(error)) => {
            tracing::warn!(error = %error, "readiness check: database unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "not_ready", "database": format!("unavailable: {error}") })),
            )
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not_ready", "database": "timed out" })),
        ),
    }
}

/// Prometheus text, for the scraper holding `LATCHKEY_METRICS_TOKEN` only: the counters
/// describe the business (payments, sessions) and are nobody else's to read. One indexed
/// lookup per scrape (the journal's highest position), never a scan.
async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let Some(expected) = &state.settings.security.metrics_token else {
        return Err(ApiError::Unauthenticated(
            "/metrics is closed: set LATCHKEY_METRICS_TOKEN and scrape with \
             Authorization: Bearer <that token>"
                .into(),
        ));
    };
    let sent = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !constant_time_eq(sent.trim().as_bytes(), expected.expose_secret().as_bytes()) {
        return Err(ApiError::Unauthenticated(
            "scrape /metrics with Authorization: Bearer <LATCHKEY_METRICS_TOKEN>".into(),
        ));
    }
    if let Ok(Ok(head)) = tokio::time::timeout(READY_TIMEOUT, state.journal.head_position()).await {
        state
            .metrics
            .set_gauge("latchkey_journal_events", &[], head as f64);
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    ))
}
