//! The HTML side of Latchkey: server-rendered pages (maud), no JavaScript build step.

pub mod dashboard;

use axum::Router;

use crate::http::AppState;

/// Every HTML route; merged into the application router beside the JSON API.
pub fn router() -> Router<AppState> {
    Router::new().merge(dashboard::router())
}
