//! Doors and devices: lists, a page each with its details, an edit form (price and
//! access time; plans), the maintenance toggle, the relay ON/OFF buttons, the TTLock sync
//! and the QR sticker download. Edits go through the JSON API's handlers.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::Router;
use latchkey_aggregates::device::DeviceStatus;
use latchkey_aggregates::door::DoorStatus;
use latchkey_projections::catalogue::{self, DeviceRow, DoorRow};
use maud::{html, Markup};
use serde::Deserialize;

use super::{
    badge, csrf_field, filled, major, may, minor_units, money, page, see_other, when, Operator,
    OperatorForm, PageResult,
};
use crate::http::auth::Permission;
use crate::http::devices::{self, DeviceChanges, PlanDto, RelaySwitch};
use crate::http::doors::{self, DoorChanges};
use crate::http::extract::ApiJson;
use crate::http::operator_actions;
use crate::http::read_params::internal;
use crate::http::{ApiError, AppState};
use crate::projections_runtime::PooledConn;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/dashboard/doors", get(door_list))
        .route("/dashboard/doors/sync", post(sync))
        .route("/dashboard/doors/{uid}", get(door_page).post(edit_door))
        .route("/dashboard/doors/{uid}/status", post(door_status))
        .route("/dashboard/devices", get(device_list))
        .route(
            "/dashboard/devices/{uid}",
            get(device_page).post(edit_device),
        )
        .route("/dashboard/devices/{uid}/status", post(device_status))
        .route("/dashboard/devices/{uid}/relay", post(relay))
}

async fn door_list(State(state): State<AppState>, op: Operator) -> PageResult {
    op.require(Permission::Read)?;
    let doors = {
        let mut pooled = PooledConn::acquire(&state.database)
            .await
            .map_err(internal)?;
        catalogue::doors(&mut pooled.conn())
            .await
            .map_err(ApiError::from)?
    };
    let body = html! {
        h1 { "Doors" }
        @if may(&op, Permission::Operate) {
            form.inline method="post" action="/dashboard/doors/sync" {
                (csrf_field(&op))
                button type="submit" { "Sync from TTLock" }
            }
        }
        @if doors.is_empty() { p.empty { "No doors yet." } } @else {
            div.scroll { table {
                thead { tr { th { "Door" } th { "Name" } th { "Location" } th { "Price" } th { "Access" } th { "Status" } th { "Codes issued" } } }
                tbody { @for door in &doors { tr {
                    td { a href={ "/dashboard/doors/" (door.door_uid) } { (door.door_uid) } }
                    td { (door.name) } td { (door.location) }
                    td.num { (money(door.price, &door.currency)) }
                    td { (door.access_minutes) " min" }
                    td { (badge(&door.status)) }
                    td.num { (door.codes_issued) }
                } } }
            } }
        }
    };
    Ok(page(&op, "Doors", body))
}

async fn load_door(state: &AppState, uid: &str) -> Result<DoorRow, ApiError> {
    let mut pooled = PooledConn::acquire(&state.database)
        .await
        .map_err(internal)?;
    catalogue::door(&mut pooled.conn(), uid)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no door {uid:?}")))
}

async fn door_page(
    State(state): State<AppState>,
    op: Operator,
    Path(uid): Path<String>,
) -> PageResult {
    op.require(Permission::Read)?;
    let door = load_door(&state, &uid).await?;
    let (aggregate, _) = state.buses.doors.load(&uid).await.map_err(ApiError::from)?;
    let offline_fallback = aggregate.offline_fallback();
    let operate = may(&op, Permission::Operate);
    let body = html! {
        h1 { "Door " (door.name) " " (badge(&door.status)) }
        dl.facts {
            dt { "Lock id" } dd { (door.lock_id) }
            dt { "Location" } dd { (door.location) " (" (door.time_zone) ")" }
            dt { "Price" } dd { (money(door.price, &door.currency)) " for " (door.access_minutes) " minutes" }
            dt { "Passage mode" } dd { (match door.passage_mode { Some(true) => "on", Some(false) => "off", None => "unknown" }) }
            dt { "Codes issued" } dd { (door.codes_issued) }
            dt { "Gateway offline" } dd { (if offline_fallback { "period-code fallback (whole hours, not remotely revocable)" } else { "guests wait, refunded at the deadline" }) }
            @if let Some(reason) = &door.status_reason { dt { "Status reason" } dd { (reason) } }
            dt { "Updated" } dd { (when(door.updated_at)) }
        }
        p.actions {
            a href={ "/api/doors/" (door.door_uid) "/qr.svg" } download={ "door-" (door.door_uid) "-qr.svg" } { "Download QR sticker" }
            " · " a href={ "/dashboard/payments?door=" (door.door_uid) } { "Payments" }
            " · " a href={ "/dashboard/audit?aggregate_type=Door&aggregate_id=" (door.door_uid) } { "Audit log" }
        }
        @if operate {
            (status_form(&op, &format!("/dashboard/doors/{}/status", door.door_uid), &door.status))
            section { h2 { "Edit" }
                form.stacked method="post" action={ "/dashboard/doors/" (door.door_uid) } {
                    (csrf_field(&op))
                    label { "Name" input type="text" name="name" value=(door.name) required; }
                    label { "Location" input type="text" name="location" value=(door.location) required; }
                    label { "Time zone" input type="text" name="time_zone" value=(door.time_zone) required; }
                    label { "Price (" (door.currency.to_ascii_uppercase()) ")" input type="text" inputmode="decimal" name="price" value=(major(door.price, &door.currency)) required; }
                    label { "Access minutes" input type="number" min="1" name="access_minutes" value=(door.access_minutes) required; }
                    label { input type="checkbox" name="offline_fallback" value="on" checked[offline_fallback]; " When the lock's gateway is offline, give a period code (whole hours, cannot be cancelled remotely)" }
                    button type="submit" { "Save" }
                }
            }
        }
    };
    Ok(page(&op, "Door", body))
}

fn status_form(op: &Operator, action: &str, status: &str) -> Markup {
    let (next, label) = if status == "maintenance" {
        ("active", "End maintenance")
    } else {
        ("maintenance", "Start maintenance")
    };
    html! {
        form.inline method="post" action=(action) {
            (csrf_field(op))
            input type="hidden" name="status" value=(next);
            label { "Reason" input type="text" name="reason"; }
            button #maintenance-toggle type="submit" { (label) }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct DoorForm {
    name: Option<String>,
    location: Option<String>,
    time_zone: Option<String>,
    price: Option<String>,
    access_minutes: Option<String>,
    /// A checkbox: present ("on") when ticked, absent otherwise.
    offline_fallback: Option<String>,
}

async fn edit_door(
    State(state): State<AppState>,
    Path(uid): Path<String>,
    OperatorForm { operator: op, form }: OperatorForm<DoorForm>,
) -> PageResult {
    op.require(Permission::Operate)?;
    let door = load_door(&state, &uid).await?;
    let changes = DoorChanges {
        name: filled(&form.name).map(str::to_owned),
        location: filled(&form.location).map(str::to_owned),
        time_zone: filled(&form.time_zone).map(str::to_owned),
        price: filled(&form.price)
            .map(|text| minor_units(text, &door.currency))
            .transpose()?,
        currency: None,
        access_minutes: filled(&form.access_minutes)
            .map(|text| {
                text.parse::<u32>().map_err(|_| {
                    ApiError::Invalid(format!(
                        "access minutes must be a whole number, not {text:?}"
                    ))
                })
            })
            .transpose()?,
        status: None,
        reason: None,
        offline_fallback: Some(form.offline_fallback.is_some()),
    };
    let _door = doors::change_door(
        State(state),
        op.principal.clone(),
        Path(uid.clone()),
        ApiJson(changes),
    )
    .await?;
    Ok(see_other(&format!("/dashboard/doors/{uid}")))
}

#[derive(Debug, Default, Deserialize)]
struct StatusForm {
    status: Option<String>,
    reason: Option<String>,
}

fn maintenance(form: &StatusForm) -> Result<bool, ApiError> {
    match filled(&form.status) {
        Some("maintenance") => Ok(true),
        Some("active") => Ok(false),
        other => Err(ApiError::Invalid(format!(
            "status must be active or maintenance, not {other:?}"
        ))),
    }
}

async fn door_status(
    State(state): State<AppState>,
    Path(uid): Path<String>,
    OperatorForm { operator: op, form }: OperatorForm<StatusForm>,
) -> PageResult {
    op.require(Permission::Operate)?;
    let status = if maintenance(&form)? {
        DoorStatus::Maintenance
    } else {
        DoorStatus::Active
    };
    let changes = DoorChanges {
        status: Some(status),
        reason: filled(&form.reason).map(str::to_owned),
        ..DoorChanges::default()
    };
    let _door = doors::change_door(
        State(state),
        op.principal.clone(),
        Path(uid.clone()),
        ApiJson(changes),
    )
    .await?;
    Ok(see_other(&format!("/dashboard/doors/{uid}")))
}

async fn sync(
    State(state): State<AppState>,
    OperatorForm { operator: op, .. }: OperatorForm<super::Button>,
) -> PageResult {
    op.require(Permission::Operate)?;
    let axum::Json(locks) =
        operator_actions::sync_doors(State(state), op.principal.clone()).await?;
    let body = html! {
        h1 { "TTLock locks" }
        @if locks.is_empty() { p.empty { "TTLock lists no locks for this account." } } @else {
            table {
                thead { tr { th { "Lock id" } th { "Name" } th { "Gateway" } th { "Door here" } } }
                tbody { @for lock in &locks { tr {
                    td { (lock.lock_id) } td { (lock.name) }
                    td { (if lock.has_gateway { "yes" } else { "no" }) }
                    td { @if lock.registered { a href={ "/dashboard/doors/" (lock.lock_id) } { "registered" } } @else { "not registered" } }
                } } }
            }
        }
        p { a href="/dashboard/doors" { "Back to doors" } }
    };
    Ok(page(&op, "TTLock sync", body))
}

async fn device_list(State(state): State<AppState>, op: Operator) -> PageResult {
    op.require(Permission::Read)?;
    let devices = {
        let mut pooled = PooledConn::acquire(&state.database)
            .await
            .map_err(internal)?;
        catalogue::devices(&mut pooled.conn())
            .await
            .map_err(ApiError::from)?
    };
    let body = html! {
        h1 { "Devices" }
        @if devices.is_empty() { p.empty { "No devices yet." } } @else {
            div.scroll { table {
                thead { tr { th { "Device" } th { "Name" } th { "Location" } th { "Plans" } th { "Status" } th { "Relay" } th { "Queue" } } }
                tbody { @for device in &devices { tr {
                    td { a href={ "/dashboard/devices/" (device.device_uid) } { (device.device_uid) } }
                    td { (device.name) } td { (device.location) }
                    td { (plans_of(device).len()) }
                    td { (badge(&device.status)) }
                    td { (relay_word(device.relay_on)) }
                    td.num { (device.queue_length) }
                } } }
            } }
        }
    };
    Ok(page(&op, "Devices", body))
}

fn relay_word(on: Option<bool>) -> &'static str {
    match on {
        Some(true) => "ON",
        Some(false) => "OFF",
        None => "unknown",
    }
}

fn plans_of(device: &DeviceRow) -> Vec<PlanDto> {
    serde_json::from_value(device.plans.clone()).unwrap_or_default()
}

/// Plans as the edit box shows them: `plan_id, name, minutes, price, currency` per line.
fn plans_text(plans: &[PlanDto]) -> String {
    plans
        .iter()
        .map(|plan| {
            format!(
                "{}, {}, {}, {}, {}",
                plan.plan_id,
                plan.name,
                plan.minutes,
                major(plan.price, &plan.currency),
                plan.currency
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Parses the plans box; a line that does not read names its number.
pub fn parse_plans(text: &str) -> Result<Vec<PlanDto>, ApiError> {
    let mut plans = Vec::new();
    for (index, line) in text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
    {
        let invalid = |what: &str| {
            ApiError::Invalid(format!(
                "plan line {}: {what} (write `plan_id, name, minutes, price, currency`, e.g. `p30, 30 minutes, 30, 3.00, eur`)",
                index + 1
            ))
        };
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [plan_id, name, minutes, price, currency] = fields.as_slice() else {
            return Err(invalid("it needs five fields"));
        };
        let minutes = minutes
            .parse::<u32>()
            .map_err(|_| invalid("minutes must be a whole number"))?;
        let price = minor_units(price, currency).map_err(|error| invalid(&error.to_string()))?;
        plans.push(PlanDto {
            plan_id: plan_id.to_string(),
            name: name.to_string(),
            minutes,
            price,
            currency: currency.to_string(),
        });
    }
    Ok(plans)
}

async fn load_device(state: &AppState, uid: &str) -> Result<DeviceRow, ApiError> {
    let mut pooled = PooledConn::acquire(&state.database)
        .await
        .map_err(internal)?;
    catalogue::device(&mut pooled.conn(), uid)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no device {uid:?}")))
}

async fn device_page(
    State(state): State<AppState>,
    op: Operator,
    Path(uid): Path<String>,
) -> PageResult {
    op.require(Permission::Read)?;
    let device = load_device(&state, &uid).await?;
    let plans = plans_of(&device);
    let operate = may(&op, Permission::Operate);
    let body = html! {
        h1 { "Device " (device.name) " " (badge(&device.status)) }
        dl.facts {
            dt { "Location" } dd { (device.location) " (" (device.time_zone) ")" }
            dt { "Shelly" } dd { (device.shelly_device_id) " channel " (device.shelly_channel) }
            dt { "Relay" } dd #relay-state { (relay_word(device.relay_on)) }
            dt { "Session" } dd { @if let Some(session) = &device.holder_session_id { a href={ "/dashboard/sessions?device=" (device.device_uid) } { (session) } } @else { "none" } }
            dt { "Queued" } dd { (device.queue_length) }
            @if let Some(reason) = &device.status_reason { dt { "Status reason" } dd { (reason) } }
        }
        h2 { "Plans" }
        table { thead { tr { th { "Plan" } th { "Name" } th { "Minutes" } th { "Price" } } }
            tbody { @for plan in &plans { tr { td { (plan.plan_id) } td { (plan.name) } td { (plan.minutes) } td.num { (money(plan.price, &plan.currency)) } } } } }
        p.actions {
            a href={ "/api/devices/" (device.device_uid) "/qr.svg" } download={ "device-" (device.device_uid) "-qr.svg" } { "Download QR sticker" }
            " · " a href={ "/dashboard/payments?device=" (device.device_uid) } { "Payments" }
            " · " a href={ "/dashboard/audit?aggregate_type=Device&aggregate_id=" (device.device_uid) } { "Audit log" }
        }
        @if operate {
            section { h2 { "Relay" }
                @for (on, label) in [(true, "Relay ON"), (false, "Relay OFF")] {
                    form.inline method="post" action={ "/dashboard/devices/" (device.device_uid) "/relay" } {
                        (csrf_field(&op))
                        input type="hidden" name="on" value=(on);
                        button type="submit" { (label) }
                    }
                }
            }
            (status_form(&op, &format!("/dashboard/devices/{}/status", device.device_uid), &device.status))
            section { h2 { "Edit" }
                form.stacked method="post" action={ "/dashboard/devices/" (device.device_uid) } {
                    (csrf_field(&op))
                    label { "Name" input type="text" name="name" value=(device.name) required; }
                    label { "Location" input type="text" name="location" value=(device.location) required; }
                    label { "Time zone" input type="text" name="time_zone" value=(device.time_zone) required; }
                    label { "Plans, one per line: plan_id, name, minutes, price, currency"
                        textarea name="plans" rows="4" { (plans_text(&plans)) } }
                    button type="submit" { "Save" }
                }
            }
        }
    };
    Ok(page(&op, "Device", body))
}

#[derive(Debug, Default, Deserialize)]
struct DeviceForm {
    name: Option<String>,
    location: Option<String>,
    time_zone: Option<String>,
    plans: Option<String>,
}

async fn edit_device(
    State(state): State<AppState>,
    Path(uid): Path<String>,
    OperatorForm { operator: op, form }: OperatorForm<DeviceForm>,
) -> PageResult {
    op.require(Permission::Operate)?;
    let changes = DeviceChanges {
        name: filled(&form.name).map(str::to_owned),
        location: filled(&form.location).map(str::to_owned),
        time_zone: filled(&form.time_zone).map(str::to_owned),
        plans: filled(&form.plans).map(parse_plans).transpose()?,
        ..DeviceChanges::default()
    };
    let _device = devices::change_device(
        State(state),
        op.principal.clone(),
        Path(uid.clone()),
        ApiJson(changes),
    )
    .await?;
    Ok(see_other(&format!("/dashboard/devices/{uid}")))
}

async fn device_status(
    State(state): State<AppState>,
    Path(uid): Path<String>,
    OperatorForm { operator: op, form }: OperatorForm<StatusForm>,
) -> PageResult {
    op.require(Permission::Operate)?;
    let status = if maintenance(&form)? {
        DeviceStatus::Maintenance
    } else {
        DeviceStatus::Active
    };
    let changes = DeviceChanges {
        status: Some(status),
        reason: filled(&form.reason).map(str::to_owned),
        ..DeviceChanges::default()
    };
    let _device = devices::change_device(
        State(state),
        op.principal.clone(),
        Path(uid.clone()),
        ApiJson(changes),
    )
    .await?;
    Ok(see_other(&format!("/dashboard/devices/{uid}")))
}

#[derive(Debug, Default, Deserialize)]
struct RelayForm {
    on: Option<String>,
}

async fn relay(
    State(state): State<AppState>,
    Path(uid): Path<String>,
    OperatorForm { operator: op, form }: OperatorForm<RelayForm>,
) -> PageResult {
    op.require(Permission::Operate)?;
    let on = match filled(&form.on) {
        Some("true") => true,
        Some("false") => false,
        other => {
            return Err(
                ApiError::Invalid(format!("on must be true or false, not {other:?}")).into(),
            )
        }
    };
    let switch = RelaySwitch {
        on,
        reason: Some("switched from the dashboard".to_string()),
    };
    let _device = devices::switch_relay(
        State(state),
        op.principal.clone(),
        Path(uid.clone()),
        ApiJson(switch),
    )
    .await?;
    Ok(see_other(&format!("/dashboard/devices/{uid}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_round_trip_through_the_edit_box() {
        let plans =
            parse_plans("p30, 30 minutes, 30, 3.00, eur\n\n p60 , 1 hour, 60, 5, eur ").unwrap();
        assert_eq!(plans.len(), 2);
        assert_eq!(plans[1].plan_id, "p60");
        assert_eq!(plans[1].price, 500);
        assert_eq!(
            plans_text(&plans),
            "p30, 30 minutes, 30, 3.00, eur\np60, 1 hour, 60, 5.00, eur"
        );
        let error = parse_plans("p30, 30 minutes, thirty, 3.00, eur").unwrap_err();
        assert!(error.to_string().contains("line 1"), "{error}");
        assert!(parse_plans("p30, 3.00").is_err());
        let yen =
            parse_plans("p30, 30 minutes, 30, 500, jpy\np60, 1 hour, 60, 1.250, kwd").unwrap();
        assert_eq!((yen[0].price, yen[1].price), (500, 1250));
        assert_eq!(
            plans_text(&yen),
            "p30, 30 minutes, 30, 500, jpy\np60, 1 hour, 60, 1.250, kwd"
        );
        let error = parse_plans("p60, 1 hour, 60, 1.2505, kwd").unwrap_err();
        assert!(error.to_string().contains("KWD has 3 decimals"), "{error}");
    }
}
