//! `GET /api/doors` and `GET /api/devices`: the catalogue projection. (The write routes
//! on the same paths live with the commands.)

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use latchkey_projections::catalogue::{self, DeviceRow, DoorRow};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::auth::{Permission, Principal};
use super::read_params::internal;
use super::{ApiError, AppState};
use crate::projections_runtime::PooledConn;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/doors", get(doors))
        .route("/api/devices", get(devices))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DoorView {
    /// The TTLock lock id as text.
    pub uid: String,
    pub lock_id: i64,
    pub name: String,
    pub location: String,
    pub time_zone: String,
    /// Price of new checkouts, minor units.
    pub price: i64,
    pub currency: String,
    pub access_minutes: i64,
    #[schema(value_type = super::doors::StatusWord)]
    pub status: String,
    pub status_reason: Option<String>,
    pub passage_mode: Option<bool>,
    /// Whether a period code is issued when the lock's gateway is offline.
    pub offline_fallback: bool,
    pub codes_issued: i64,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<DoorRow> for DoorView {
    fn from(row: DoorRow) -> Self {
        DoorView {
            uid: row.door_uid,
            lock_id: row.lock_id,
            name: row.name,
            location: row.location,
            time_zone: row.time_zone,
            price: row.price,
            currency: row.currency,
            access_minutes: row.access_minutes,
            status: row.status,
            status_reason: row.status_reason,
            passage_mode: row.passage_mode,
            offline_fallback: row.offline_fallback,
            codes_issued: row.codes_issued,
            registered_at: row.registered_at,
            updated_at: row.updated_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceView {
    pub uid: String,
    pub name: String,
    pub location: String,
    pub time_zone: String,
    pub shelly_device_id: String,
    pub shelly_channel: i64,
    #[schema(value_type = Vec<super::devices::PlanDto>)]
    pub plans: Value,
    #[schema(value_type = super::doors::StatusWord)]
    pub status: String,
    pub status_reason: Option<String>,
    /// The session holding the relay, if any.
    pub holder_session_id: Option<String>,
    pub queue_length: i64,
    /// The relay state after the last manual or sweep switch.
    pub relay_on: Option<bool>,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<DeviceRow> for DeviceView {
    fn from(row: DeviceRow) -> Self {
        DeviceView {
            uid: row.device_uid,
            name: row.name,
            location: row.location,
            time_zone: row.time_zone,
            shelly_device_id: row.shelly_device_id,
            shelly_channel: row.shelly_channel,
            plans: row.plans,
            status: row.status,
            status_reason: row.status_reason,
            holder_session_id: row.holder_session_id,
            queue_length: row.queue_length,
            relay_on: row.relay_on,
            registered_at: row.registered_at,
            updated_at: row.updated_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DoorList {
    pub items: Vec<DoorView>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceList {
    pub items: Vec<DeviceView>,
}

/// Every door, by uid.
#[utoipa::path(get, path = "/api/doors", tag = "catalogue",
    responses((status = 200, body = DoorList), (status = 401, body = super::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub async fn doors(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<DoorList>, ApiError> {
    principal.require(Permission::Read)?;
    let mut pooled = PooledConn::acquire(&state.database)
        .await
        .map_err(internal)?;
    let rows = catalogue::doors(&mut pooled.conn()).await?;
    Ok(Json(DoorList {
        items: rows.into_iter().map(DoorView::from).collect(),
    }))
}

/// Every device, by uid.
#[utoipa::path(get, path = "/api/devices", tag = "catalogue",
    responses((status = 200, body = DeviceList), (status = 401, body = super::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub async fn devices(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<DeviceList>, ApiError> {
    principal.require(Permission::Read)?;
    let mut pooled = PooledConn::acquire(&state.database)
        .await
        .map_err(internal)?;
    let rows = catalogue::devices(&mut pooled.conn()).await?;
    Ok(Json(DeviceList {
        items: rows.into_iter().map(DeviceView::from).collect(),
    }))
}
