//! The HTTP surface: one router per audience, all sharing [`AppState`].

pub mod auth;
pub mod error;
pub mod operations;
pub mod stripe_webhook;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::config::Settings;
use crate::integrations::stripe::StripeRuntime;
use crate::metrics::Metrics;
use crate::store::journal::Journal;
use crate::store::Database;

pub use error::ApiError;

/// A request that takes longer than this is answered 408 and its work dropped; nothing we
/// serve should come close, and a stuck handler must not hold a connection forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub database: Database,
    pub journal: Journal,
    pub metrics: Arc<Metrics>,
    pub stripe: StripeRuntime,
}

/// The whole application router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(operations::router())
        .merge(stripe_webhook::router())
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                let route = request
                    .extensions()
                    .get::<MatchedPath>()
                    .map(MatchedPath::as_str)
                    .unwrap_or("unmatched");
                tracing::info_span!("http", method = %request.method(), route)
            }),
        )
        .with_state(state)
}

/// Counts requests by route template (never the raw path: tokens live in paths) and status.
async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = request.method().to_string();
    let response = next.run(request).await;
    state.metrics.increment(
        "latchkey_http_requests_total",
        &[
            ("method", &method),
            ("route", &route),
            ("status", response.status().as_str()),
        ],
    );
    response
}
