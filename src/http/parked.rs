//! Parked workflow reactions ([`crate::store::parking`]) for operators: list them, ask for
//! a retry once the cause is fixed, or skip one for good with a note. Retry and skip need
//! the operate permission; the row keeps who decided and when, and the decision is logged.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tracing::info;
use utoipa::ToSchema;

use super::auth::{Permission, Principal};
use super::extract::OptionalApiJson;
use super::read_params::ReadQuery;
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
    responses((status = 200, description = "Parked workflow reactions, newest first", body = ParkedList),
        (status = 400, description = "A malformed query string"), (status = 422, description = "An unknown `status`")),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ReadQuery(query): ReadQuery<ListQuery>,
) -> Result<Json<ParkedList>, ApiError> {
    principal.require(Permission::Read)?;
    let status = super::read_params::one_of(
        "status",
        query.status.as_deref().filter(|s| !s.is_empty()),
        &parking::STATUSES,
    )?;
    let items = parking::list(&state.database, status.as_deref(), LIST_LIMIT)
        .await
        .map_err(anyhow::Error::new)?;
    Ok(Json(ParkedList { items }))
}

/// At most 200 rows.
#[derive(serde::Serialize, ToSchema)]
pub struct ParkedList {
    pub items: Vec<ParkedReaction>,
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
    responses((status = 202, description = "Retry asked for; the workflow runs it within a second or so", body = ParkedReaction),
        (status = 409, description = "Not `parked`")),
    security(("bearer" = [])))]
pub async fn retry(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    OptionalApiJson(body): OptionalApiJson<DecisionBody>,
) -> Result<(StatusCode, Json<ParkedReaction>), ApiError> {
    principal.require(Permission::Operate)?;
    let note = note_of(body);
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
    responses((status = 200, description = "Skipped for good", body = ParkedReaction),
        (status = 409, description = "Not `parked`")),
    security(("bearer" = [])))]
pub async fn skip(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    OptionalApiJson(body): OptionalApiJson<DecisionBody>,
) -> Result<Json<ParkedReaction>, ApiError> {
    principal.require(Permission::Operate)?;
    let note = note_of(body);
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

/// The optional `{note}` body's note, when it says something.
fn note_of(body: Option<DecisionBody>) -> Option<String> {
    body.and_then(|body| body.note)
        .filter(|note| !note.trim().is_empty())
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
