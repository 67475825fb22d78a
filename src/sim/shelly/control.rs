//! `/_sim/` control endpoints of the Shelly simulator (see the module header).

use std::time::Duration;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::config::{OverLimitAnswer, SimDeviceSpec};
use super::relay::RelayView;
use super::state::{DeviceView, RateLimitStats};
use super::ShellySim;
use crate::sim::{AdvanceClock, FaultSettings, RecordedRequest, SimControlError};

pub(super) fn router() -> Router<ShellySim> {
    Router::new()
        .route("/state", get(state))
        .route("/devices", post(add_device))
        .route("/devices/{device_id}/online", post(online))
        .route("/devices/{device_id}/reboot", post(reboot))
        .route("/devices/{device_id}/relays/{channel}", get(relay))
        .route(
            "/devices/{device_id}/relays/{channel}/external",
            post(external),
        )
        .route(
            "/devices/{device_id}/relays/{channel}/auto_off",
            post(auto_off),
        )
        .route("/faults", post(faults))
        .route("/clock/advance", post(advance_clock))
        .route("/rate_limit", get(rate_limit).post(configure_rate_limit))
        .route("/requests", get(requests).delete(clear_requests))
}

#[derive(Deserialize)]
struct Online {
    online: bool,
}

#[derive(Deserialize)]
struct Switch {
    on: bool,
}

#[derive(Deserialize)]
struct AutoOff {
    delay_s: Option<u64>,
}

/// Body of `POST /_sim/rate_limit`; absent fields are unchanged.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RateLimitSettings {
    pub interval_ms: Option<u64>,
    pub over_limit_answer: Option<OverLimitAnswer>,
    /// Zero the counters and forget violations.
    #[serde(default)]
    pub reset: bool,
}

async fn state(State(sim): State<ShellySim>) -> Json<Vec<DeviceView>> {
    Json(sim.state())
}

async fn add_device(
    State(sim): State<ShellySim>,
    Json(spec): Json<SimDeviceSpec>,
) -> Json<Vec<DeviceView>> {
    sim.add_device(spec);
    Json(sim.state())
}

async fn online(
    State(sim): State<ShellySim>,
    Path(device_id): Path<String>,
    Json(body): Json<Online>,
) -> Result<Json<Vec<DeviceView>>, SimControlError> {
    sim.set_online(&device_id, body.online)?;
    Ok(Json(sim.state()))
}

async fn reboot(
    State(sim): State<ShellySim>,
    Path(device_id): Path<String>,
) -> Result<Json<Vec<DeviceView>>, SimControlError> {
    sim.reboot(&device_id)?;
    Ok(Json(sim.state()))
}

async fn relay(
    State(sim): State<ShellySim>,
    Path((device_id, channel)): Path<(String, u32)>,
) -> Result<Json<RelayView>, SimControlError> {
    sim.relay(&device_id, channel).map(Json)
}

async fn external(
    State(sim): State<ShellySim>,
    Path((device_id, channel)): Path<(String, u32)>,
    Json(body): Json<Switch>,
) -> Result<Json<RelayView>, SimControlError> {
    sim.switch_external(&device_id, channel, body.on).map(Json)
}

async fn auto_off(
    State(sim): State<ShellySim>,
    Path((device_id, channel)): Path<(String, u32)>,
    Json(body): Json<AutoOff>,
) -> Result<Json<RelayView>, SimControlError> {
    sim.set_auto_off(&device_id, channel, body.delay_s)
        .map(Json)
}

async fn faults(
    State(sim): State<ShellySim>,
    Json(body): Json<FaultSettings>,
) -> Json<FaultSettings> {
    Json(sim.set_faults(&body))
}

async fn advance_clock(
    State(sim): State<ShellySim>,
    Json(body): Json<AdvanceClock>,
) -> Json<Vec<DeviceView>> {
    sim.advance_clock(Duration::from_millis(body.ms));
    Json(sim.state())
}

async fn rate_limit(State(sim): State<ShellySim>) -> Json<RateLimitStats> {
    Json(sim.rate_limit_stats())
}

async fn configure_rate_limit(
    State(sim): State<ShellySim>,
    Json(body): Json<RateLimitSettings>,
) -> Json<RateLimitStats> {
    sim.configure_rate_limit(&body);
    Json(sim.rate_limit_stats())
}

async fn requests(State(sim): State<ShellySim>) -> Json<Vec<RecordedRequest>> {
    Json(sim.requests())
}

async fn clear_requests(State(sim): State<ShellySim>) -> Json<Vec<RecordedRequest>> {
    sim.clear_requests();
    Json(Vec::new())
}
