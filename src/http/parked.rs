//! Parked workflow reactions ([`crate::store::parking`]) for operators: list them, ask for
//! a retry once the cause is fixed, or skip one for good with a note. Retry and skip need
//! the operate permission; the row keeps who decided and when, and the decision is logged.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::info;
use utoipa::ToSchema;

use super::auth::{Permission, Principal};
use super::{ApiError, AppState};
use crate::store::parking::{self, OperatorDecision, ParkedReaction};

/// Rows a list answers with: parked reactions are rare, and a page of this size shows an
/// outbreak without paging.
const LIST_LIMIT: i64 = 200;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/parked-reactions", get(list))
        .route("/api/parked-reactions/{id}/retry", post(retry))
        .route("/api/parked-reactions/{id}/skip", post(skip))
}

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    status: Option<String>,
}

#[utoipa::path(get, path = "/api/parked-reactions", tag = "operations",
    params(("status" = Option<String>, Query, description = "parked, retry_requested, resolved or skipped")),
    responses((status = 200, description = "{items}: parked workflow reactions, newest first"),
        (status = 401, body = super::openapi::ErrorBody), (status = 422, body = super::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    principal.require(Permission::Read)?;
    let status = super::read_params::one_of(
        "status",
        query.status.as_deref().filter(|s| !s.is_empty()),
        &parking::STATUSES,
    )?;
    let items = parking::list(&state.database, status.as_deref(), LIST_LIMIT)
        .await
        .map_err(anyhow::Error::new)?;
    Ok(Json(json!({ "items": items })))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// Why (kept on the row): what was fixed, or why the reaction is not needed.
    pub note: Option<String>,
}

#[utoipa::path(post, path = "/api/parked-reactions/{id}/retry", tag = "operations",
    params(("id" = String, Path, description = "parked_id")),
    request_body = Option<DecisionBody>,
    responses((status = 202, description = "Retry asked for; the workflow runs it within a second or so"),
        (status = 401, body = super::openapi::ErrorBody), (status = 403, body = super::openapi::ErrorBody),
        (status = 404, body = super::openapi::ErrorBody), (status = 409, body = super::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub async fn retry(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<ParkedReaction>), ApiError> {
    principal.require(Permission::Operate)?;
    let note = note_of(&body)?;
    let row = decide(
        &state,
        &id,
        OperatorDecision::Retry,
        &principal.actor_id,
        note.as_deref(),
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(row)))
}

#[utoipa::path(post, path = "/api/parked-reactions/{id}/skip", tag = "operations",
    params(("id" = String, Path, description = "parked_id")),
    request_body = Option<DecisionBody>,
    responses((status = 200, description = "Skipped for good"),
        (status = 401, body = super::openapi::ErrorBody), (status = 403, body = super::openapi::ErrorBody),
        (status = 404, body = super::openapi::ErrorBody), (status = 409, body = super::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub async fn skip(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<ParkedReaction>, ApiError> {
    principal.require(Permission::Operate)?;
    let note = note_of(&body)?;
    let row = decide(
        &state,
        &id,
        OperatorDecision::Skip,
        &principal.actor_id,
        note.as_deref(),
    )
    .await?;
    Ok(Json(row))
}

/// The optional `{note}` body: empty is fine, anything else must be that shape.
fn note_of(body: &[u8]) -> Result<Option<String>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let parsed: DecisionBody = serde_json::from_slice(body).map_err(|error| {
        ApiError::Invalid(format!("the body must be {{\"note\": \"…\"}}: {error}"))
    })?;
    Ok(parsed.note.filter(|note| !note.trim().is_empty()))
}

/// Records an operator's decision on a parked row; shared with the dashboard's buttons.
pub async fn decide(
    state: &AppState,
    parked_id: &str,
    decision: OperatorDecision,
    actor_id: &str,
    note: Option<&str>,
) -> Result<ParkedReaction, ApiError> {
    let stored = parking::get(&state.database, parked_id)
        .await
        .map_err(anyhow::Error::new)?
        .ok_or_else(|| ApiError::NotFound(format!("no parked reaction {parked_id}")))?;
    let decided = parking::decide(&state.database, parked_id, decision, actor_id, note)
        .await
        .map_err(anyhow::Error::new)?;
    if !decided {
        return Err(ApiError::Conflict(format!(
            "the reaction is {}; only a parked reaction can be retried or skipped",
            stored.status
        )));
    }
    info!(
        parked_id,
        subscriber = %stored.subscriber,
        position = stored.position,
        actor = actor_id,
        decision = ?decision,
        note,
        "operator decided on a parked reaction"
    );
    parking::get(&state.database, parked_id)
        .await
        .map_err(anyhow::Error::new)?
        .ok_or_else(|| ApiError::NotFound(format!("no parked reaction {parked_id}")))
}
