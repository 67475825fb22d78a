//! `/_sim/` control endpoints of the TTLock simulator (see the module header).

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::time::Duration;

use super::{EntryResult, LockView, SimLockSpec, TtlockSim, TtlockSimStats};
use crate::sim::{AdvanceClock, FaultSettings, RecordedRequest, SimControlError};

pub(super) fn router() -> Router<TtlockSim> {
    Router::new()
        .route("/state", get(state))
        .route("/locks", post(add_lock))
        .route("/locks/{lock_id}/gateway", post(gateway))
        .route("/locks/{lock_id}/passage_mode", post(passage_mode))
        .route("/locks/{lock_id}/enter", post(enter))
        .route("/faults", post(faults))
        .route("/tokens/expire", post(expire_tokens))
        .route("/clock/advance", post(advance_clock))
        .route("/stats", get(stats))
        .route("/requests", get(requests).delete(clear_requests))
}

#[derive(Deserialize)]
struct Online {
    online: bool,
}

#[derive(Deserialize)]
struct PassageModeBody {
    enabled: bool,
    #[serde(default)]
    auto_unlock: bool,
}

#[derive(Deserialize)]
struct Entry {
    code: String,
    at: Option<DateTime<Utc>>,
}

#[derive(Deserialize, Default)]
struct ExpireTokens {
    #[serde(default)]
    refresh_too: bool,
}

async fn state(State(sim): State<TtlockSim>) -> Json<Vec<LockView>> {
    Json(sim.state())
}

async fn add_lock(
    State(sim): State<TtlockSim>,
    Json(spec): Json<SimLockSpec>,
) -> Json<Vec<LockView>> {
    sim.add_lock(spec);
    Json(sim.state())
}

async fn gateway(
    State(sim): State<TtlockSim>,
    Path(lock_id): Path<i64>,
    Json(body): Json<Online>,
) -> Result<Json<Vec<LockView>>, SimControlError> {
    sim.set_gateway_online(lock_id, body.online)?;
    Ok(Json(sim.state()))
}

async fn passage_mode(
    State(sim): State<TtlockSim>,
    Path(lock_id): Path<i64>,
    Json(body): Json<PassageModeBody>,
) -> Result<Json<Vec<LockView>>, SimControlError> {
    sim.set_passage_mode(lock_id, body.enabled, body.auto_unlock)?;
    Ok(Json(sim.state()))
}

async fn enter(
    State(sim): State<TtlockSim>,
    Path(lock_id): Path<i64>,
    Json(body): Json<Entry>,
) -> Result<Json<EntryResult>, SimControlError> {
    let at = body.at.unwrap_or_else(|| sim.clock().now());
    sim.enter_passcode(lock_id, &body.code, at).map(Json)
}

async fn faults(
    State(sim): State<TtlockSim>,
    Json(body): Json<FaultSettings>,
) -> Json<FaultSettings> {
    Json(sim.set_faults(&body))
}

async fn expire_tokens(
    State(sim): State<TtlockSim>,
    body: Option<Json<ExpireTokens>>,
) -> Json<TtlockSimStats> {
    let body = body.map(|Json(body)| body).unwrap_or_default();
    sim.expire_tokens(body.refresh_too);
    Json(sim.stats())
}

async fn advance_clock(
    State(sim): State<TtlockSim>,
    Json(body): Json<AdvanceClock>,
) -> Json<serde_json::Value> {
    sim.advance_clock(Duration::from_millis(body.ms));
    Json(serde_json::json!({ "now": sim.clock().now(), "offset_ms": sim.clock().offset_ms() }))
}

async fn stats(State(sim): State<TtlockSim>) -> Json<TtlockSimStats> {
    Json(sim.stats())
}

async fn requests(State(sim): State<TtlockSim>) -> Json<Vec<RecordedRequest>> {
    Json(sim.requests())
}

async fn clear_requests(State(sim): State<TtlockSim>) -> Json<Vec<RecordedRequest>> {
    sim.clear_requests();
    Json(Vec::new())
}
