//! The HTTP surface: one router per audience, all sharing [`AppState`].

pub mod audit;
pub mod auth;
pub mod catalogue;
pub mod checkout;
pub mod checkout_limits;
pub mod devices;
pub mod domain_errors;
pub mod doors;
pub mod error;
pub mod extract;
pub mod health_modules;
pub mod journal_api;
pub mod openapi;
pub mod operations;
pub mod operator_actions;
pub mod parked;
pub mod payments;
pub mod read_params;
pub mod reference;
pub mod reports;
pub mod security_headers;
pub mod serve;
pub mod sessions;
pub mod stripe_webhook;

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::config::Settings;
use crate::cqrs::Buses;
use crate::gateways::LiveGateways;
use crate::integrations::stripe::StripeRuntime;
use crate::metrics::Metrics;
use crate::store::journal::Journal;
use crate::store::Database;

pub use error::ApiError;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub database: Database,
    pub journal: Journal,
    pub metrics: Arc<Metrics>,
    /// Every aggregate's command bus.
    pub buses: Arc<Buses>,
    /// The integrations' ports; replaced when an admin saves new credentials.
    pub gateways: LiveGateways,
    /// The webhook inbox, the Stripe client and their background jobs.
    pub stripe: StripeRuntime,
    /// Settings saved from the dashboard, overlaid on the environment (which wins).
    pub settings_store: crate::settings_store::SettingsStore,
    /// Checkout starts per client address and per door/device (429 past them).
    pub checkout_limits: Arc<checkout_limits::CheckoutLimits>,
    /// Outgoing email and its health (`email` in module health).
    pub mail: crate::mail::Mail,
    /// This instance's name in the tables instances share (`module_health`): process id
    /// and a random suffix, new at every start.
    pub instance: Arc<str>,
    /// Now, for rules with a lifetime (a password reset link's hour); the wall clock
    /// unless a test moves time by hand (`WorkflowOptions::clock`).
    pub clock: Arc<dyn crate::reconciler::Clock>,
}

impl AppState {
    /// 503 naming the variables to set when Shelly is not configured.
    pub fn require_shelly(&self) -> Result<(), ApiError> {
        match &self.gateways.current().shelly_missing {
            Some(missing) => Err(ApiError::NotConfigured(missing.message())),
            None => Ok(()),
        }
    }

    /// 503 naming the variables to set when Stripe is not configured.
    pub fn require_stripe(&self) -> Result<(), ApiError> {
        match &self.gateways.current().stripe_missing {
            Some(missing) => Err(ApiError::NotConfigured(missing.message())),
            None => Ok(()),
        }
    }

    /// 503 naming the variables to set when TTLock is not configured.
    pub fn require_ttlock(&self) -> Result<(), ApiError> {
        match &self.gateways.current().ttlock_missing {
            Some(missing) => Err(ApiError::NotConfigured(missing.message())),
            None => Ok(()),
        }
    }
}

/// The whole application router.
pub fn router(state: AppState) -> Router {
    let limits = state.settings.security.limits.clone();
    Router::new()
        .merge(operations::router())
        .merge(read_router())
        .merge(checkout::router())
        .merge(doors::router())
        .merge(devices::router())
        .merge(health_modules::router())
        .merge(operator_actions::router())
        .merge(parked::router())
        .merge(stripe_webhook::router())
        .merge(crate::ui::router())
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        // A request not answered within the limit gets 408 and its work is dropped: a
        // stuck handler must not hold a connection forever.
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        // Webhooks and forms are kilobytes; a bigger body is refused (413) unread.
        .layer(axum::extract::DefaultBodyLimit::max(
            limits.body_limit_bytes,
        ))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            limits.body_limit_bytes,
        ))
        .layer(middleware::from_fn(error::json_errors))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            security_headers::add,
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

/// The read side of the operator and auditor API (issue 8), all `GET`.
fn read_router() -> Router<AppState> {
    Router::new()
        .merge(payments::router())
        .merge(sessions::router())
        .merge(catalogue::router())
        .merge(audit::router())
        .merge(reports::router())
        .merge(journal_api::router())
        .merge(openapi::router())
        .merge(reference::router())
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
