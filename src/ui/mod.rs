//! The HTML side of Latchkey: server-rendered pages (maud), no JavaScript build step.
//!
//! `layout` is the page shell and HTML error page every page shares, `assets` the style
//! sheet and script, `branding` the operator's name/logo/colour, `guest` the pages a
//! guest opens (pay, use, access, session).

pub mod account;
pub mod assets;
pub mod branding;
pub mod dashboard;
pub mod guest;
pub mod layout;
pub mod qr;

use axum::Router;

use crate::http::AppState;

/// Every HTML route; merged into the application router beside the JSON API.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(assets::router())
        .merge(guest::router())
        .merge(account::router())
        .merge(dashboard::router())
}
