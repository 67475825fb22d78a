//! Response headers that tell browsers what our pages may do, on every response.
//!
//! - `Content-Security-Policy`: scripts and styles only from our own `/static/…` files
//!   (no inline script or style anywhere, so an injected `<script>` does not run), no
//!   plugins, no `<base>` rewriting, and `frame-ancestors 'none'` so no site can frame a
//!   page (a framed refund confirmation could be clicked through).
//! - `X-Frame-Options: DENY` for browsers that predate `frame-ancestors`.
//! - `X-Content-Type-Options: nosniff`: a JSON answer is never run as a script.
//! - `Referrer-Policy: no-referrer`: guest URLs carry capability tokens, which must not
//!   reach a logo's host or Stripe in a `Referer`.
//! - `Strict-Transport-Security` when `LATCHKEY_PUBLIC_URL` is https.
//! - `Cache-Control: no-store` on every guest page and JSON twin that can show a code
//!   (`/access/…`, `/session/…`, `/api/access/…`, `/api/session/…`): no shared cache or
//!   back button keeps a passcode.

use axum::extract::{Request, State};
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;

/// Images may come from anywhere (the operator's logo is any URL); everything else is ours.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src * data:; object-src 'none'; base-uri 'none'; \
     frame-ancestors 'none'";

/// One year, the HSTS preload list's minimum.
const HSTS: &str = "max-age=31536000; includeSubDomains";

/// Paths whose answers may carry a passcode or a session's live state.
const NO_STORE_PREFIXES: [&str; 4] = ["/access/", "/session/", "/api/access/", "/api/session/"];

/// Adds the headers above to the response of every route (and of unmatched paths).
pub async fn add(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let no_store = NO_STORE_PREFIXES
        .iter()
        .any(|prefix| request.uri().path().starts_with(prefix));
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let fixed: [(HeaderName, &'static str); 4] = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if state.settings.public_url.scheme() == "https" {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        );
    }
    if no_store {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    }
    response
}
