//! Operators' write routes for doors: register, change, maintenance mode.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{patch, post};
use axum::{Json, Router};
use chrono::Utc;
use latchkey_aggregates::door::{Door, DoorCommand, DoorStatus};
use latchkey_aggregates::Money;
use serde::{Deserialize, Serialize};

use super::auth::{Permission, Principal};
use super::extract::{currency, valid_time_zone, ApiJson};
use super::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/doors", post(register_door))
        .route("/api/doors/{uid}", patch(change_door))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDoor {
    /// The TTLock lock id (digits).
    #[schema(pattern = "^[0-9]+$", max_length = 18)]
    pub uid: String,
    #[schema(pattern = "\\S")]
    pub name: String,
    pub location: String,
    /// An IANA time zone name such as `Europe/Paris`.
    #[schema(format = "time-zone")]
    pub time_zone: String,
    /// Minor units (1500 is 15.00 EUR).
    #[schema(minimum = 1)]
    pub price: i64,
    /// Lower-case ISO 4217, e.g. `eur`.
    #[schema(pattern = "^[a-z]{3}$")]
    pub currency: String,
    #[schema(minimum = 1, maximum = 10080)]
    pub access_minutes: u32,
    /// When the lock's gateway is not working, give paid guests a random period code
    /// (whole hours, not remotely revocable) instead of waiting (default false).
    #[serde(default)]
    pub offline_fallback: bool,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DoorChanges {
    #[schema(pattern = "\\S")]
    pub name: Option<String>,
    pub location: Option<String>,
    #[schema(format = "time-zone")]
    pub time_zone: Option<String>,
    /// Minor units; in the door's current currency unless `currency` comes with it.
    #[schema(minimum = 1)]
    pub price: Option<i64>,
    /// Only together with `price`.
    #[schema(pattern = "^[a-z]{3}$")]
    pub currency: Option<String>,
    #[schema(minimum = 1, maximum = 10080)]
    pub access_minutes: Option<u32>,
    #[schema(value_type = Option<StatusWord>)]
    pub status: Option<DoorStatus>,
    /// Why the status changes (kept in the audit log).
    pub reason: Option<String>,
    /// See [`NewDoor::offline_fallback`].
    pub offline_fallback: Option<bool>,
}

/// `active` (takes payments) or `maintenance` (refuses them with 409).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "snake_case")]
pub enum StatusWord {
    Active,
    Maintenance,
}

/// A door as operators see it (the command side's answer; the list is `DoorView`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Door)]
pub struct DoorView {
    pub uid: String,
    pub lock_id: Option<i64>,
    pub name: Option<String>,
    pub location: Option<String>,
    pub time_zone: Option<String>,
    pub price: Option<i64>,
    pub currency: Option<String>,
    pub access_minutes: Option<u32>,
    #[schema(value_type = StatusWord)]
    pub status: DoorStatus,
    pub passage_mode: Option<bool>,
    pub offline_fallback: bool,
}

impl DoorView {
    pub fn of(uid: &str, door: &Door) -> Self {
        DoorView {
            uid: uid.to_string(),
            lock_id: door.lock_id(),
            name: door.name().map(str::to_string),
            location: door.location().map(str::to_string),
            time_zone: door.time_zone().map(str::to_string),
            price: door.price().map(|price| price.amount_minor),
            currency: door.price().map(|price| price.currency.to_string()),
            access_minutes: door.access_minutes(),
            status: door.status(),
            passage_mode: door.passage_mode_enabled(),
            offline_fallback: door.offline_fallback(),
        }
    }
}

#[utoipa::path(post, path = "/api/doors", tag = "catalogue",
    request_body = NewDoor,
    responses((status = 201, description = "The door", body = DoorView), (status = 409, description = "A door with this uid exists")),
    security(("bearer" = [])))]
pub async fn register_door(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(door): ApiJson<NewDoor>,
) -> Result<(StatusCode, Json<DoorView>), ApiError> {
    principal.require(Permission::Operate)?;
    let lock_id: i64 = door.uid.parse().map_err(|_| {
        ApiError::Invalid(format!(
            "uid {:?} must be the numeric TTLock lock id",
            door.uid
        ))
    })?;
    valid_time_zone(&door.time_zone)?;
    let command = DoorCommand::RegisterDoor {
        door_uid: door.uid.clone(),
        lock_id,
        name: door.name,
        location: door.location,
        time_zone: door.time_zone,
        price: Money::new(door.price, currency(&door.currency)?),
        access_minutes: door.access_minutes,
        actor: principal.actor(),
        at: Utc::now(),
    };
    state
        .buses
        .doors
        .execute(&door.uid, command, principal.command_metadata())
        .await?;
    if door.offline_fallback {
        set_offline_fallback(&state, &principal, &door.uid, true).await?;
    }
    let (current, _) = state.buses.doors.load(&door.uid).await?;
    Ok((StatusCode::CREATED, Json(DoorView::of(&door.uid, &current))))
}

#[utoipa::path(patch, path = "/api/doors/{uid}", tag = "catalogue",
    params(("uid" = String, Path, description = "Door uid (TTLock lock id)")),
    request_body = DoorChanges,
    responses((status = 200, description = "The door", body = DoorView), (status = 409, description = "The change does not apply to the door as it is")),
    security(("bearer" = [])))]
pub async fn change_door(
    State(state): State<AppState>,
    principal: Principal,
    Path(uid): Path<String>,
    ApiJson(changes): ApiJson<DoorChanges>,
) -> Result<Json<DoorView>, ApiError> {
    principal.require(Permission::Operate)?;
    let (door, _) = state.buses.doors.load(&uid).await?;
    if !door.is_registered() {
        return Err(ApiError::NotFound(format!("no door {uid}")));
    }
    if let Some(time_zone) = &changes.time_zone {
        valid_time_zone(time_zone)?;
    }
    let price = match (changes.price, &changes.currency) {
        (None, None) => None,
        (Some(amount), Some(code)) => Some(Money::new(amount, currency(code)?)),
        (Some(amount), None) => {
            let current = door
                .price()
                .ok_or_else(|| ApiError::Invalid("send currency with price".into()))?;
            Some(Money::new(amount, current.currency.clone()))
        }
        (None, Some(_)) => return Err(ApiError::Invalid("send price with currency".into())),
    };
    let has_details = changes.name.is_some()
        || changes.location.is_some()
        || changes.time_zone.is_some()
        || price.is_some()
        || changes.access_minutes.is_some();
    if has_details {
        let command = DoorCommand::UpdateDoor {
            name: changes.name,
            location: changes.location,
            time_zone: changes.time_zone,
            price,
            access_minutes: changes.access_minutes,
            actor: principal.actor(),
            at: Utc::now(),
        };
        state
            .buses
            .doors
            .execute(&uid, command, principal.command_metadata())
            .await?;
    }
    if let Some(enabled) = changes.offline_fallback {
        set_offline_fallback(&state, &principal, &uid, enabled).await?;
    }
    if let Some(status) = changes.status {
        let command = DoorCommand::SetDoorStatus {
            status,
            reason: changes
                .reason
                .unwrap_or_else(|| "set by an operator".to_string()),
            actor: principal.actor(),
            at: Utc::now(),
        };
        state
            .buses
            .doors
            .execute(&uid, command, principal.command_metadata())
            .await?;
    }
    let (current, _) = state.buses.doors.load(&uid).await?;
    Ok(Json(DoorView::of(&uid, &current)))
}

/// Allows or stops the period-code fallback while the lock's gateway is not working.
pub async fn set_offline_fallback(
    state: &AppState,
    principal: &Principal,
    uid: &str,
    enabled: bool,
) -> Result<(), ApiError> {
    let command = DoorCommand::SetOfflineFallback {
        enabled,
        actor: principal.actor(),
        at: Utc::now(),
    };
    state
        .buses
        .doors
        .execute(uid, command, principal.command_metadata())
        .await?;
    Ok(())
}
