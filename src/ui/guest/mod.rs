//! The pages a guest opens: pay for a door, pick a plan for a device, then follow the
//! payment through the capability link (`/access/{token}`, `/session/{token}`), plus their
//! JSON twins and the QR stickers that lead to the pay pages.
//!
//! A guest who lost that link asks for it again by email at `/lost-link`.
//!
//! Nothing here needs a login: the door/device uid is public (it is on the sticker), and a
//! token page shows only what its own payment grants.

mod access;
pub mod api;
mod lost_link;
mod pay;
pub mod view;

use axum::routing::get;
use axum::Router;

use crate::http::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/pay/{door_uid}",
            get(pay::door_page).post(pay::door_submit),
        )
        .route(
            "/use/{device_uid}",
            get(pay::device_page).post(pay::device_submit),
        )
        .route(
            "/lost-link",
            get(lost_link::page_get).post(lost_link::submit),
        )
        .route("/access/{token}", get(access::access_page))
        .route("/session/{token}", get(access::session_page))
        .route("/api/access/{token}", get(api::access))
        .route("/api/session/{token}", get(api::session))
        .route("/api/doors/{uid}/qr.svg", get(api::door_sticker))
        .route("/api/devices/{uid}/qr.svg", get(api::device_sticker))
}
