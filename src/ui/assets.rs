//! The two static files every page may load, compiled into the binary.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::http::AppState;

/// Shared style sheet (works from 320 px phones to wide screens).
pub const APP_CSS: &str = include_str!("static/app.css");
/// The only script: countdowns on session pages. Pages work without it.
pub const APP_JS: &str = include_str!("static/app.js");

/// A day: long enough to spare phones repeat downloads, short enough that a new release's
/// style reaches everyone the next day (the files are not fingerprinted).
const CACHE_CONTROL: &str = "public, max-age=86400";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/static/app.css", get(css))
        .route("/static/app.js", get(js))
}

async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, CACHE_CONTROL),
        ],
        APP_CSS,
    )
}

async fn js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, CACHE_CONTROL),
        ],
        APP_JS,
    )
}
