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
    pub email: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct DeviceCheckout {
    pub plan_id: String,
    pub email: String,
}

#[utoipa::path(post, path = "/api/checkout/door/{door_uid}", tag = "guests",
    params(("door_uid" = String, Path, description = "Door uid")),
    request_body = DoorCheckout,
    responses((status = 201, description = "{payment_id, checkout_url, status_url}"), (status = 429, body = super::openapi::ErrorBody), (status = 404, body = super::openapi::ErrorBody), (status = 409, body = super::openapi::ErrorBody), (status = 422, body = super::openapi::ErrorBody), (status = 502, body = super::openapi::ErrorBody), (status = 503, body = super::openapi::ErrorBody)))]
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
    responses((status = 201, description = "{payment_id, checkout_url, status_url}"), (status = 429, body = super::openapi::ErrorBody), (status = 404, body = super::openapi::ErrorBody), (status = 409, body = super::openapi::ErrorBody), (status = 422, body = super::openapi::ErrorBody), (status = 502, body = super::openapi::ErrorBody), (status = 503, body = super::openapi::ErrorBody)))]
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
