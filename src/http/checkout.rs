//! Guests start a payment (JSON twins of the pay/use pages; no auth: anyone may pay).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;

use super::extract::ApiJson;
use super::{ApiError, AppState};
use crate::payments::checkout::{self, StartedCheckout};

use crate::ui::account::login::ClientAddress;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/checkout/door/{door_uid}", post(door_checkout))
        .route("/api/checkout/device/{device_uid}", post(device_checkout))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct DoorCheckout {
    /// For the receipt: one `@`, a dot in the domain, no spaces.
    #[schema(format = "email", max_length = 254)]
    pub email: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct DeviceCheckout {
    /// One of the device's plans (`GET /api/devices`); another is refused with 422.
    pub plan_id: String,
    /// For the receipt: one `@`, a dot in the domain, no spaces.
    #[schema(format = "email", max_length = 254)]
    pub email: String,
}

#[utoipa::path(post, path = "/api/checkout/door/{door_uid}", tag = "guests",
    params(("door_uid" = String, Path, description = "Door uid")),
    request_body = DoorCheckout,
    responses((status = 201, description = "Started: pay at `checkout_url`; follow at `status_url`", body = StartedCheckout),
        (status = 409, description = "In maintenance, or not ready to take payments"),
        (status = 429, description = "Too many checkouts from this address or for this target; see `Retry-After`"),
        (status = 502, description = "Stripe refused or did not answer"),
        (status = 503, description = "Stripe is not configured")))]
pub async fn door_checkout(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    Path(door_uid): Path<String>,
    ApiJson(body): ApiJson<DoorCheckout>,
) -> Result<(StatusCode, Json<StartedCheckout>), ApiError> {
    state
        .checkout_limits
        .admit(address, &format!("door:{door_uid}"))?;
    let started = checkout::start_door_checkout(&state, &door_uid, &body.email).await?;
    Ok((StatusCode::CREATED, Json(started)))
}

#[utoipa::path(post, path = "/api/checkout/device/{device_uid}", tag = "guests",
    params(("device_uid" = String, Path, description = "Device uid")),
    request_body = DeviceCheckout,
    responses((status = 201, description = "Started: pay at `checkout_url`; follow at `status_url`", body = StartedCheckout),
        (status = 409, description = "In maintenance, or not ready to take payments"),
        (status = 429, description = "Too many checkouts from this address or for this target; see `Retry-After`"),
        (status = 502, description = "Stripe refused or did not answer"),
        (status = 503, description = "Stripe is not configured")))]
pub async fn device_checkout(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    Path(device_uid): Path<String>,
    ApiJson(body): ApiJson<DeviceCheckout>,
) -> Result<(StatusCode, Json<StartedCheckout>), ApiError> {
    state
        .checkout_limits
        .admit(address, &format!("device:{device_uid}"))?;
    let started =
        checkout::start_device_checkout(&state, &device_uid, &body.plan_id, &body.email).await?;
    Ok((StatusCode::CREATED, Json(started)))
}
