//! Operators' write routes for devices: register, change, plans, maintenance, relay.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{patch, post};
use axum::{Json, Router};
use chrono::Utc;
use latchkey_aggregates::device::{Device, DeviceCommand, DeviceStatus, UsagePlan};
use latchkey_aggregates::Money;
use serde::{Deserialize, Serialize};

use super::auth::{Permission, Principal};
use super::extract::{currency, valid_time_zone, ApiJson};
use super::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/devices", post(register_device))
        .route("/api/devices/{uid}", patch(change_device))
        .route("/api/devices/{uid}/relay", post(switch_relay))
}

/// A usage plan as the API speaks it: `{plan_id, name, minutes, price, currency}`.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanDto {
    /// Unique among the device's plans.
    #[schema(pattern = "\\S")]
    pub plan_id: String,
    #[schema(pattern = "\\S")]
    pub name: String,
    #[schema(minimum = 1, maximum = 1440)]
    pub minutes: u32,
    /// Minor units.
    #[schema(minimum = 1)]
    pub price: i64,
    /// Lower-case ISO 4217, e.g. `eur`.
    #[schema(pattern = "^[a-z]{3}$")]
    pub currency: String,
}

impl PlanDto {
    fn into_plan(self) -> Result<UsagePlan, ApiError> {
        Ok(UsagePlan {
            price: Money::new(self.price, currency(&self.currency)?),
            plan_id: self.plan_id,
            name: self.name,
            minutes: self.minutes,
        })
    }

    fn of(plan: &UsagePlan) -> Self {
        PlanDto {
            plan_id: plan.plan_id.clone(),
            name: plan.name.clone(),
            minutes: plan.minutes,
            price: plan.price.amount_minor,
            currency: plan.price.currency.to_string(),
        }
    }
}

fn plans(dtos: Vec<PlanDto>) -> Result<Vec<UsagePlan>, ApiError> {
    dtos.into_iter().map(PlanDto::into_plan).collect()
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDevice {
    #[schema(pattern = "\\S")]
    pub uid: String,
    #[schema(pattern = "\\S")]
    pub name: String,
    pub location: String,
    /// An IANA time zone name such as `Europe/Paris`.
    #[schema(format = "time-zone")]
    pub time_zone: String,
    /// The Shelly Cloud device id, or the device's local `http://` address.
    #[schema(pattern = "\\S")]
    pub shelly_device_id: String,
    /// The relay's channel (default 0).
    #[serde(default)]
    pub shelly_channel: u32,
    /// 1 to 20 plans with distinct `plan_id`s.
    #[schema(min_items = 1, max_items = 20)]
    pub plans: Vec<PlanDto>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceChanges {
    #[schema(pattern = "\\S")]
    pub name: Option<String>,
    pub location: Option<String>,
    #[schema(format = "time-zone")]
    pub time_zone: Option<String>,
    #[schema(pattern = "\\S")]
    pub shelly_device_id: Option<String>,
    pub shelly_channel: Option<u32>,
    /// Replaces every plan: 1 to 20 with distinct `plan_id`s.
    #[schema(min_items = 1, max_items = 20)]
    pub plans: Option<Vec<PlanDto>>,
    #[schema(value_type = Option<super::doors::StatusWord>)]
    pub status: Option<DeviceStatus>,
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RelaySwitch {
    pub on: bool,
    /// Kept in the audit log (default "switched by an operator").
    pub reason: Option<String>,
}

/// A device as operators see it (the command side's answer; the list is `DeviceView`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Device)]
pub struct DeviceView {
    pub uid: String,
    pub name: Option<String>,
    pub location: Option<String>,
    pub time_zone: Option<String>,
    pub shelly_device_id: Option<String>,
    pub shelly_channel: Option<u32>,
    pub plans: Vec<PlanDto>,
    #[schema(value_type = super::doors::StatusWord)]
    pub status: DeviceStatus,
    pub holder_session: Option<uuid::Uuid>,
    pub queued_sessions: Vec<uuid::Uuid>,
    pub relay_on: Option<bool>,
}

impl DeviceView {
    pub fn of(uid: &str, device: &Device) -> Self {
        let relay = device.relay_target();
        DeviceView {
            uid: uid.to_string(),
            name: device.name().map(str::to_string),
            location: device.location().map(str::to_string),
            time_zone: device.time_zone().map(str::to_string),
            shelly_device_id: relay.as_ref().map(|target| target.shelly_device_id.clone()),
            shelly_channel: relay.as_ref().map(|target| target.channel),
            plans: device.plans().iter().map(PlanDto::of).collect(),
            status: device.status(),
            holder_session: device.holder_session(),
            queued_sessions: device.queued_sessions(),
            relay_on: device.relay_is_on(),
        }
    }
}

#[utoipa::path(post, path = "/api/devices", tag = "catalogue",
    request_body = NewDevice,
    responses((status = 201, description = "The device", body = DeviceView), (status = 409, description = "A device with this uid exists")),
    security(("bearer" = [])))]
pub async fn register_device(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(device): ApiJson<NewDevice>,
) -> Result<(StatusCode, Json<DeviceView>), ApiError> {
    principal.require(Permission::Operate)?;
    valid_time_zone(&device.time_zone)?;
    let command = DeviceCommand::RegisterDevice {
        device_uid: device.uid.clone(),
        name: device.name,
        location: device.location,
        time_zone: device.time_zone,
        shelly_device_id: device.shelly_device_id,
        shelly_channel: device.shelly_channel,
        plans: plans(device.plans)?,
        actor: principal.actor(),
        at: Utc::now(),
    };
    state
        .buses
        .devices
        .execute(&device.uid, command, principal.command_metadata())
        .await?;
    let (current, _) = state.buses.devices.load(&device.uid).await?;
    Ok((
        StatusCode::CREATED,
        Json(DeviceView::of(&device.uid, &current)),
    ))
}

#[utoipa::path(patch, path = "/api/devices/{uid}", tag = "catalogue",
    params(("uid" = String, Path, description = "Device uid")),
    request_body = DeviceChanges,
    responses((status = 200, description = "The device", body = DeviceView), (status = 409, description = "The change does not apply to the device as it is")),
    security(("bearer" = [])))]
pub async fn change_device(
    State(state): State<AppState>,
    principal: Principal,
    Path(uid): Path<String>,
    ApiJson(changes): ApiJson<DeviceChanges>,
) -> Result<Json<DeviceView>, ApiError> {
    principal.require(Permission::Operate)?;
    let (device, _) = state.buses.devices.load(&uid).await?;
    if !device.is_registered() {
        return Err(ApiError::NotFound(format!("no device {uid}")));
    }
    if let Some(time_zone) = &changes.time_zone {
        valid_time_zone(time_zone)?;
    }
    let bus = &state.buses.devices;
    let has_details = changes.name.is_some()
        || changes.location.is_some()
        || changes.time_zone.is_some()
        || changes.shelly_device_id.is_some()
        || changes.shelly_channel.is_some();
    if has_details {
        let command = DeviceCommand::UpdateDevice {
            name: changes.name,
            location: changes.location,
            time_zone: changes.time_zone,
            shelly_device_id: changes.shelly_device_id,
            shelly_channel: changes.shelly_channel,
            actor: principal.actor(),
            at: Utc::now(),
        };
        bus.execute(&uid, command, principal.command_metadata())
            .await?;
    }
    if let Some(new_plans) = changes.plans {
        let command = DeviceCommand::ChangePlans {
            plans: plans(new_plans)?,
            actor: principal.actor(),
            at: Utc::now(),
        };
        bus.execute(&uid, command, principal.command_metadata())
            .await?;
    }
    if let Some(status) = changes.status {
        let command = DeviceCommand::SetDeviceStatus {
            status,
            reason: changes
                .reason
                .unwrap_or_else(|| "set by an operator".to_string()),
            actor: principal.actor(),
            at: Utc::now(),
        };
        bus.execute(&uid, command, principal.command_metadata())
            .await?;
    }
    let (current, _) = bus.load(&uid).await?;
    Ok(Json(DeviceView::of(&uid, &current)))
}

#[utoipa::path(post, path = "/api/devices/{uid}/relay", tag = "catalogue",
    params(("uid" = String, Path, description = "Device uid")),
    request_body = RelaySwitch,
    responses((status = 200, description = "The device", body = DeviceView), (status = 409, description = "The device cannot switch now (in maintenance, or a session holds it)"), (status = 502, description = "Shelly refused or did not answer"), (status = 503, description = "Shelly Cloud is not configured")),
    security(("bearer" = [])))]
pub async fn switch_relay(
    State(state): State<AppState>,
    principal: Principal,
    Path(uid): Path<String>,
    ApiJson(switch): ApiJson<RelaySwitch>,
) -> Result<Json<DeviceView>, ApiError> {
    principal.require(Permission::Operate)?;
    let (device, _) = state.buses.devices.load(&uid).await?;
    let on_the_cloud = device
        .relay_target()
        .is_some_and(|target| !target.shelly_device_id.starts_with("http"));
    if on_the_cloud {
        state.require_shelly()?;
    }
    let command = DeviceCommand::SwitchRelay {
        on: switch.on,
        reason: switch
            .reason
            .unwrap_or_else(|| "switched by an operator".to_string()),
        actor: principal.actor(),
        at: Utc::now(),
    };
    state
        .buses
        .devices
        .execute(&uid, command, principal.command_metadata())
        .await?;
    let (current, _) = state.buses.devices.load(&uid).await?;
    Ok(Json(DeviceView::of(&uid, &current)))
}
