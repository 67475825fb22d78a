//! The static files every page may load, compiled into the binary, and the operator's
//! brand colours as a style sheet of their own (`/static/brand.css`): pages carry no
//! inline style, so the Content-Security-Policy can forbid it.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use axum::extract::State;

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
        .route("/static/brand.css", get(brand_css))
}

/// The brand's colours as CSS variables; revalidated on every page, since an admin may
/// change them at any time on the settings page.
async fn brand_css(State(state): State<AppState>) -> impl IntoResponse {
    let branding = super::branding::current(&state).await;
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        format!(":root,body{{{}}}\n", branding.style()),
    )
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
