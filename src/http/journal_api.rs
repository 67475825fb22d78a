//! The auditors' view of the journal itself: `GET /api/events` (global order),
//! `GET /api/aggregates/{type}/{id}?at=` (state at a time, by replay) and
//! `GET /api/verify` (the global commitment, signed checkpoints and hash chains), and the
//! verifiable ledger's checkpoints and proofs under `/api/ledger/…`.
//!
//! Door passcodes are masked (`"code": "***"`) for every role: auditors read the whole
//! history but need no live codes, and a code in an API answer ends up in scripts, logs
//! and spreadsheets. An admin who must see one (a guest at the door without their page)
//! adds `reveal_codes=true`; the reveal is logged with the admin's id (`passcodes
//! revealed`, target `latchkey::audit`).

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::auth::{Permission, Principal};
use super::read_params::{self, internal, ReadQuery};
use super::{ApiError, AppState};
use crate::cli::replay::{self, ReplayError, ReplayedState};
use crate::cli::verify::{pinned_key, verify_all};
use crate::store::journal::{EventFilter, JournalEvent};
use crate::store::ledger::{self, Checkpoint, ConsistencyProof, InclusionProof, ProofError};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/events", get(events))
        .route(
            "/api/aggregates/{aggregate_type}/{id}",
            get(aggregate_state),
        )
        .route("/api/verify", get(verify))
        .route("/api/ledger/checkpoints", get(list_checkpoints))
        .route("/api/ledger/public-key", get(public_key))
        .route("/api/ledger/proofs/inclusion", get(inclusion_proof))
        .route("/api/ledger/proofs/consistency", get(consistency_proof))
}

/// A journal event as API.md shapes it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JournalEventView {
    pub position: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    #[schema(value_type = Object)]
    pub payload: Value,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub recorded_at: DateTime<Utc>,
}

impl From<JournalEvent> for JournalEventView {
    fn from(event: JournalEvent) -> Self {
        JournalEventView {
            position: event.position,
            aggregate_type: event.aggregate_type,
            aggregate_id: event.aggregate_id,
            sequence: event.sequence,
            event_type: event.event_type,
            event_version: event.event_version,
            payload: event.payload,
            metadata: event.metadata,
            recorded_at: event.recorded_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    pub items: Vec<JournalEventView>,
    /// The position to pass as `after` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Only events after this position (default 0: from the start).
    pub after: Option<String>,
    /// 1–200, default 50.
    pub limit: Option<String>,
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<String>,
    /// `true`: show door passcodes unmasked (admins only; logged).
    pub reveal_codes: Option<String>,
}

/// The journal in global (position) order.
#[utoipa::path(get, path = "/api/events", tag = "auditors",
    params(EventQuery),
    responses(
        (status = 200, body = EventPage),
        (status = 401, body = super::openapi::ErrorBody),
        (status = 403, description = "`reveal_codes=true` from a role other than admin"),
        (status = 422, body = super::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub async fn events(
    State(state): State<AppState>,
    principal: Principal,
    ReadQuery(query): ReadQuery<EventQuery>,
) -> Result<Json<EventPage>, ApiError> {
    principal.require(Permission::Read)?;
    let after = match query.after.as_deref() {
        None => 0,
        Some(value) => value
            .parse::<i64>()
            .ok()
            .filter(|after| *after >= 0)
            .ok_or_else(|| {
                ApiError::Invalid(format!(
                    "after must be a journal position (0 or more), not {value:?}"
                ))
            })?,
    };
    let limit = read_params::limit(query.limit.as_deref())?;
    let filter = EventFilter {
        after,
        until: None,
        aggregate_type: read_params::text("aggregate_type", query.aggregate_type.as_deref())?,
        aggregate_id: read_params::text("aggregate_id", query.aggregate_id.as_deref())?,
    };
    let reveal = reveal_codes(&principal, query.reveal_codes.as_deref(), "/api/events")?;
    let mut events = state.journal.page(&filter, limit).await.map_err(internal)?;
    if !reveal {
        for event in &mut events {
            mask_passcodes(&mut event.payload);
        }
    }
    let next_cursor = match events.last() {
        Some(last) if events.len() as i64 == limit => Some(last.position.to_string()),
        _ => None,
    };
    Ok(Json(EventPage {
        items: events.into_iter().map(JournalEventView::from).collect(),
        next_cursor,
    }))
}

/// An aggregate's state after the events recorded at or before `at`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AggregateStateView {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub at: Option<DateTime<Utc>>,
    /// Sequence number of the last event applied.
    pub version: i64,
    pub events_applied: usize,
    pub last_recorded_at: DateTime<Utc>,
    /// The aggregate, serialized as the domain defines it.
    #[schema(value_type = Object)]
    pub state: Value,
}

impl From<ReplayedState> for AggregateStateView {
    fn from(replayed: ReplayedState) -> Self {
        AggregateStateView {
            aggregate_type: replayed.aggregate_type,
            aggregate_id: replayed.aggregate_id,
            at: replayed.at,
            version: replayed.version,
            events_applied: replayed.events_applied,
            last_recorded_at: replayed.last_recorded_at,
            state: replayed.state,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AtQuery {
    /// RFC 3339 time; only events recorded at or before it are replayed (default: now).
    pub at: Option<String>,
    /// `true`: show door passcodes unmasked (admins only; logged).
    pub reveal_codes: Option<String>,
}

/// Replays one aggregate to a point in time.
#[utoipa::path(get, path = "/api/aggregates/{aggregate_type}/{id}", tag = "auditors",
    params(
        ("aggregate_type" = String, Path, description = "Payment, Door, Device or DeviceSession"),
        ("id" = String, Path, description = "Aggregate id"),
        AtQuery),
    responses(
        (status = 200, body = AggregateStateView),
        (status = 401, body = super::openapi::ErrorBody),
        (status = 403, description = "`reveal_codes=true` from a role other than admin"),
        (status = 404, body = super::openapi::ErrorBody),
        (status = 422, body = super::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub async fn aggregate_state(
    State(state): State<AppState>,
    principal: Principal,
    Path((aggregate_type, id)): Path<(String, String)>,
    ReadQuery(query): ReadQuery<AtQuery>,
) -> Result<Json<AggregateStateView>, ApiError> {
    principal.require(Permission::Read)?;
    let at = read_params::time("at", query.at.as_deref())?;
    let reveal = reveal_codes(&principal, query.reveal_codes.as_deref(), "/api/aggregates")?;
    match replay::state_at(&state.journal, &aggregate_type, &id, at).await {
        Ok(mut replayed) => {
            if !reveal {
                mask_passcodes(&mut replayed.state);
            }
            Ok(Json(replayed.into()))
        }
        Err(error @ (ReplayError::UnknownType(_) | ReplayError::NotFound(..))) => {
            Err(ApiError::NotFound(error.to_string()))
        }
        Err(ReplayError::Failed(error)) => Err(ApiError::Internal(error)),
    }
}

/// Whether this answer may carry passcodes: only when an admin asks, and then logged.
fn reveal_codes(principal: &Principal, asked: Option<&str>, route: &str) -> Result<bool, ApiError> {
    match asked {
        None | Some("false") => Ok(false),
        Some("true") => {
            principal.require(Permission::Administer)?;
            tracing::warn!(
                target: "latchkey::audit",
                actor = principal.actor_id,
                route,
                "passcodes revealed"
            );
            Ok(true)
        }
        Some(other) => Err(ApiError::Invalid(format!(
            "reveal_codes must be true or false, not {other:?}"
        ))),
    }
}

/// Replaces every door passcode (a string under a `code` key, at any depth) with `***`.
pub fn mask_passcodes(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if key == "code" && value.is_string() {
                    *value = Value::String("***".to_string());
                } else {
                    mask_passcodes(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_passcodes),
        _ => {}
    }
}

/// The outcome of checking the journal against its commitment and its hash chains.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VerifyView {
    /// True when nothing was found wrong.
    pub ok: bool,
    pub events_checked: u64,
    pub aggregates_checked: u64,
    /// The first broken hash chain link, in words; `null` when intact.
    pub broken: Option<String>,
    /// The first problem with the global commitment, in words; `null` when intact.
    pub ledger_problem: Option<String>,
    /// The journal position of the first problem found, when there is one.
    pub first_bad_position: Option<i64>,
    pub sealed_events: u64,
    pub checkpoints_checked: usize,
    pub latest_checkpoint: Option<Checkpoint>,
}

/// Checks the journal against its global commitment and every stored checkpoint (pinned
/// to LATCHKEY_SIGNING_KEY's public key when the server has it), then every hash chain.
#[utoipa::path(get, path = "/api/verify", tag = "auditors",
    responses(
        (status = 200, body = VerifyView),
        (status = 401, body = super::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub async fn verify(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<VerifyView>, ApiError> {
    principal.require(Permission::Read)?;
    let key = pinned_key(&state.settings, None)?;
    let (ledger, chains) = verify_all(&state.journal, Vec::new(), key.as_ref()).await?;
    let first_bad_position = ledger
        .problem
        .as_ref()
        .and_then(|problem| problem.position)
        .or(chains.broken.as_ref().and_then(|link| link.position));
    Ok(Json(VerifyView {
        ok: ledger.problem.is_none() && chains.broken.is_none(),
        events_checked: chains.events_checked,
        aggregates_checked: chains.aggregates_checked,
        broken: chains.broken.map(|link| link.to_string()),
        ledger_problem: ledger.problem.map(|problem| problem.to_string()),
        first_bad_position,
        sealed_events: ledger.sealed_size,
        checkpoints_checked: ledger.checkpoints_checked,
        latest_checkpoint: ledger.latest_checkpoint,
    }))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CheckpointList {
    /// Every signed checkpoint, smallest tree first.
    pub items: Vec<Checkpoint>,
}

/// Every signed checkpoint of the journal's global commitment.
#[utoipa::path(get, path = "/api/ledger/checkpoints", tag = "auditors",
    responses(
        (status = 200, body = CheckpointList),
        (status = 401, body = super::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_checkpoints(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<CheckpointList>, ApiError> {
    principal.require(Permission::Read)?;
    Ok(Json(CheckpointList {
        items: ledger::checkpoints(&state.database).await?,
    }))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PublicKeyView {
    /// Base64 Ed25519 public key that signs checkpoints.
    pub public_key: String,
}

/// The public key checkpoints are signed with (503 when LATCHKEY_SIGNING_KEY is unset).
#[utoipa::path(get, path = "/api/ledger/public-key", tag = "auditors",
    responses(
        (status = 200, body = PublicKeyView),
        (status = 401, body = super::openapi::ErrorBody),
        (status = 503, body = super::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub async fn public_key(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<PublicKeyView>, ApiError> {
    principal.require(Permission::Read)?;
    let key = state.settings.ledger.signing_key.as_ref().ok_or_else(|| {
        ApiError::NotConfigured(
            "no checkpoint signing key: set LATCHKEY_SIGNING_KEY (openssl rand -base64 32)".into(),
        )
    })?;
    Ok(Json(PublicKeyView {
        public_key: key.public_key_base64(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InclusionQuery {
    /// The journal position of the event.
    pub position: Option<String>,
}

fn proof_error(error: ProofError) -> ApiError {
    match error {
        ProofError::NotFound(message) => ApiError::NotFound(message),
        ProofError::Failed(error) => ApiError::Internal(error),
    }
}

fn whole_number(name: &str, value: Option<&str>) -> Result<i64, ApiError> {
    let value = value.ok_or_else(|| ApiError::Invalid(format!("{name} is required")))?;
    value
        .parse::<i64>()
        .ok()
        .filter(|number| *number > 0)
        .ok_or_else(|| {
            ApiError::Invalid(format!(
                "{name} must be a positive whole number, not {value:?}"
            ))
        })
}

/// Inclusion proof of one event against the latest signed checkpoint (`latchkey prove`).
#[utoipa::path(get, path = "/api/ledger/proofs/inclusion", tag = "auditors",
    params(InclusionQuery),
    responses(
        (status = 200, body = InclusionProof),
        (status = 401, body = super::openapi::ErrorBody),
        (status = 404, body = super::openapi::ErrorBody),
        (status = 422, body = super::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub async fn inclusion_proof(
    State(state): State<AppState>,
    principal: Principal,
    ReadQuery(query): ReadQuery<InclusionQuery>,
) -> Result<Json<InclusionProof>, ApiError> {
    principal.require(Permission::Read)?;
    let position = whole_number("position", query.position.as_deref())?;
    let proof = ledger::prove_inclusion(&state.journal, position)
        .await
        .map_err(proof_error)?;
    Ok(Json(proof))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConsistencyQuery {
    /// Tree size of the older checkpoint.
    pub old: Option<String>,
    /// Tree size of the newer checkpoint.
    pub new: Option<String>,
}

/// Consistency proof between two signed checkpoints (`latchkey prove --consistency`).
#[utoipa::path(get, path = "/api/ledger/proofs/consistency", tag = "auditors",
    params(ConsistencyQuery),
    responses(
        (status = 200, body = ConsistencyProof),
        (status = 401, body = super::openapi::ErrorBody),
        (status = 404, body = super::openapi::ErrorBody),
        (status = 422, body = super::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub async fn consistency_proof(
    State(state): State<AppState>,
    principal: Principal,
    ReadQuery(query): ReadQuery<ConsistencyQuery>,
) -> Result<Json<ConsistencyProof>, ApiError> {
    principal.require(Permission::Read)?;
    let old = whole_number("old", query.old.as_deref())?;
    let new = whole_number("new", query.new.as_deref())?;
    let proof = ledger::prove_consistency(&state.database, old as u64, new as u64)
        .await
        .map_err(proof_error)?;
    Ok(Json(proof))
}
