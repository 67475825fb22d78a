//! The pages a guest opens: pay for a door, pick a plan for a device, then follow the
//! payment through the capability link (`/access/{token}`, `/session/{token}`).
//!
//! Nothing here needs a login: the door/device uid is public (it is on the sticker), and a
//! token page shows only what its own payment grants.

mod pay;

use axum::routing::get;
use axum::Router;

use crate::http::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/pay/{door_uid}", get(pay::door_page))
}
