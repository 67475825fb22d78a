//! `GET /api/sessions`: device sessions from the sessions projection, with the seconds
//! of paid time left computed at the moment of the request.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use latchkey_projections::sessions::{self, SessionFilter, SessionRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::{Permission, Principal};
use super::read_params::{self, internal, ReadQuery};
use super::{ApiError, AppState};
use crate::projections_runtime::PooledConn;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/sessions", get(list))
}

pub const STATES: &[&str] = &[
    "opened",
    "queued",
    "active",
    "finishing",
    "completed",
    "cancelled",
    "failed",
    "force_ended",
];

/// A session as API.md shapes it (plus a few more fields).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionView {
    pub session_id: String,
    pub payment_id: String,
    pub device_uid: String,
    pub plan_id: String,
    pub plan_minutes: i64,
    /// opened, queued, active, finishing, completed, cancelled, failed or force_ended.
    pub state: String,
    pub started_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub grace_ends_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// Paid seconds left now: only while active; 0 once the time is up.
    pub remaining_seconds: Option<i64>,
    /// The relay state last commanded (`true` = ON).
    pub relay_commanded: Option<bool>,
    /// The relay state last observed.
    pub relay_observed: Option<bool>,
    pub last_relay_error: Option<String>,
    pub end_reason: Option<String>,
    pub ended_by: Option<String>,
    pub updated_at: DateTime<Utc>,
}

impl SessionView {
    fn new(row: SessionRow, now: DateTime<Utc>) -> Self {
        let remaining_seconds = row.remaining_seconds(now);
        SessionView {
            session_id: row.session_id,
            payment_id: row.payment_id,
            device_uid: row.device_uid,
            plan_id: row.plan_id,
            plan_minutes: row.plan_minutes,
            state: row.state,
            started_at: row.started_at,
            ends_at: row.ends_at,
            grace_ends_at: row.grace_ends_at,
            ended_at: row.ended_at,
            remaining_seconds,
            relay_commanded: row.relay_commanded,
            relay_observed: row.relay_observed,
            last_relay_error: row.last_relay_error,
            end_reason: row.end_reason,
            ended_by: row.ended_by,
            updated_at: row.updated_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionList {
    pub items: Vec<SessionView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SessionQuery {
    /// opened, queued, active, finishing, completed, cancelled, failed or force_ended.
    pub state: Option<String>,
    /// Device uid.
    pub device: Option<String>,
    /// Payment UUID.
    pub payment: Option<String>,
    /// 1–200, default 50.
    pub limit: Option<String>,
}

/// Sessions, most recently changed first.
#[utoipa::path(get, path = "/api/sessions", tag = "sessions",
    params(SessionQuery),
    responses(
        (status = 200, body = SessionList),
        (status = 401, body = super::openapi::ErrorBody),
        (status = 422, body = super::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ReadQuery(query): ReadQuery<SessionQuery>,
) -> Result<Json<SessionList>, ApiError> {
    principal.require(Permission::Read)?;
    let filter = SessionFilter {
        state: read_params::one_of("state", query.state.as_deref(), STATES)?,
        device_uid: read_params::text("device", query.device.as_deref())?,
        payment_id: read_params::text("payment", query.payment.as_deref())?,
    };
    let limit = read_params::limit(query.limit.as_deref())?;
    let mut pooled = PooledConn::acquire(&state.database)
        .await
        .map_err(internal)?;
    let rows = sessions::list(&mut pooled.conn(), &filter, limit).await?;
    let now = Utc::now();
    Ok(Json(SessionList {
        items: rows
            .into_iter()
            .map(|row| SessionView::new(row, now))
            .collect(),
    }))
}
