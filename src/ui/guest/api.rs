//! JSON twins of the token pages, and the QR stickers that lead guests to the pay pages.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::view::{self, AccessStatus, SessionStatus};
use crate::http::{ApiError, AppState};
use crate::ui::qr;

#[utoipa::path(get, path = "/api/access/{token}", tag = "guests",
    params(("token" = String, Path, description = "The guest's capability token (43 URL-safe characters)")),
    responses((status = 200, body = AccessStatus), (status = 404, body = crate::http::openapi::ErrorBody), (status = 410, body = crate::http::openapi::ErrorBody)))]
pub async fn access(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Json<AccessStatus>, ApiError> {
    Ok(Json(view::access(&state, &token).await?))
}

#[utoipa::path(get, path = "/api/session/{token}", tag = "guests",
    params(("token" = String, Path, description = "The guest's capability token (43 URL-safe characters)")),
    responses((status = 200, body = SessionStatus), (status = 404, body = crate::http::openapi::ErrorBody), (status = 410, body = crate::http::openapi::ErrorBody)))]
pub async fn session(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Json<SessionStatus>, ApiError> {
    Ok(Json(view::session(&state, &token).await?))
}

#[utoipa::path(get, path = "/api/doors/{uid}/qr.svg", tag = "guests",
    params(("uid" = String, Path, description = "Door uid")),
    responses((status = 200, description = "SVG QR code of the door's public pay URL", content_type = "image/svg+xml"), (status = 404, body = crate::http::openapi::ErrorBody)))]
pub async fn door_sticker(
    State(state): State<AppState>,
    Path(uid): Path<String>,
) -> Result<Response, ApiError> {
    let (door, _) = state.buses.doors.load(&uid).await?;
    if !door.is_registered() {
        return Err(ApiError::NotFound(format!("no door {uid}")));
    }
    let name = door.name().unwrap_or(&uid).to_string();
    sticker(&view::public_link(&state, &format!("pay/{uid}")), &name)
}

#[utoipa::path(get, path = "/api/devices/{uid}/qr.svg", tag = "guests",
    params(("uid" = String, Path, description = "Device uid")),
    responses((status = 200, description = "SVG QR code of the device's public use URL", content_type = "image/svg+xml"), (status = 404, body = crate::http::openapi::ErrorBody)))]
pub async fn device_sticker(
    State(state): State<AppState>,
    Path(uid): Path<String>,
) -> Result<Response, ApiError> {
    let (device, _) = state.buses.devices.load(&uid).await?;
    if !device.is_registered() {
        return Err(ApiError::NotFound(format!("no device {uid}")));
    }
    let name = device.name().unwrap_or(&uid).to_string();
    sticker(&view::public_link(&state, &format!("use/{uid}")), &name)
}

fn sticker(url: &str, name: &str) -> Result<Response, ApiError> {
    let svg = qr::standalone_svg(url, &format!("Scan to pay for {name}: {url}"))
        .map_err(|error| ApiError::Internal(anyhow::anyhow!("QR code for {url}: {error}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        svg,
    )
        .into_response())
}
